"""Config of the harness's native Dream implementation (Dream-v0 7B and DiffuCoder share it).

Field names follow the official ``config.json`` (Qwen2-style: ``hidden_size``, ``num_attention_heads``,
``num_key_value_heads``, ``intermediate_size``, ``rope_theta`` ...), so a hub checkpoint's config loads as is.
``auto_map`` is dropped: the hub's remote code is never imported. Settings that would change the maths and
that this implementation does not have are refused by ``check_supported`` instead of being ignored.
"""

from transformers import PretrainedConfig

from ...types import UserError


class DreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1000000.0,
        use_sliding_window: bool = False,
        attention_dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        mask_token_id: int | None = 151666,
        pad_token_id: int | None = 151643,
        bos_token_id: int | None = 151643,
        eos_token_id: int | None = 151643,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.use_sliding_window = use_sliding_window
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        kwargs.setdefault("use_cache", False)
        kwargs.pop("auto_map", None)  # the hub config points at remote code; we never run it
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)


def check_supported(raw: dict) -> None:
    """Refuse settings that change the forward pass and that the native implementation does not compute.
    ``raw``: the checkpoint's config.json as written (transformers 5.x rewrites rope settings on loading)."""
    problems = []
    for key in ("rope_scaling", "rope_parameters"):
        rs = raw.get(key)
        if isinstance(rs, dict) and (rs.get("rope_type") or rs.get("type")) not in (None, "default"):
            problems.append(f"{key}={rs!r} (only plain RoPE is implemented)")
    if raw.get("use_sliding_window"):
        problems.append("use_sliding_window=true (sliding-window attention is not implemented)")
    if raw.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={raw['hidden_act']!r} (only silu)")
    h, a = raw.get("hidden_size", 1), raw.get("num_attention_heads", 1)
    if h % a or a % (raw.get("num_key_value_heads") or a):
        problems.append("hidden_size / num_attention_heads / num_key_value_heads do not divide")
    if problems:
        raise UserError("this Dream-family config asks for what lfpo-bench's Dream implementation does not compute: "
                        + "; ".join(problems) + ". Loading it anyway would give silently wrong logits; please open an issue "
                        "with the checkpoint's config.json")
