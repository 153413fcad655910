"""Config of the harness's native LLaDA implementation.

Field names follow the official LLaDA ``config.json`` (``d_model``, ``n_heads``, ``n_layers``,
``mlp_hidden_size``, ...) so that an official checkpoint's config loads as is; unknown official fields are
kept as attributes and ignored.
"""

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        max_sequence_length: int = 4096,
        weight_tying: bool = False,
        include_bias: bool = False,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.max_sequence_length = max_sequence_length
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.mask_token_id = mask_token_id
        kwargs.setdefault("use_cache", False)  # absent from the official config; transformers 5.x expects it
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        kwargs.pop("auto_map", None)  # the official config points at remote code; we never use it
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
