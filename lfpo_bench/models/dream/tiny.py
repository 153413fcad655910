"""Tiny random checkpoints in the hub layout of Dream-v0 and DiffuCoder, for tests and CPU benchmarks: a
``config.json`` with ``model_type: Dream``, ``architectures`` and an ``auto_map`` pointing at remote-code files,
those files themselves (they raise on import: lfpo-bench must never run them), safetensors with the official
weight names, and a character-level tokenizer whose ``tokenizer_config.json`` names a custom tokenizer class
(as Dream's does), with the Qwen-style chat template and the family's special tokens."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REMOTE_CODE = ("raise RuntimeError('remote code of an lfpo-bench test checkpoint was imported: the loader must build "
               "Dream natively and never run a checkpoint\\'s code')\n")


def char_tokenizer():
    from ..llada.tiny import hub_char_tokenizer

    return hub_char_tokenizer(SPECIALS, CHAT_TEMPLATE, bos="<|beginoftext|>", eos="<|endoftext|>", pad="<|endoftext|>",
                              mask="<|mask|>", extra=["<|im_start|>", "<|im_end|>"])


def make_tiny_dream(path: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                    tie: bool = False, **config_overrides) -> Path:
    from .configuration_dream import DreamConfig
    from .modeling_dream import DreamLM

    tok = char_tokenizer()
    V = (len(tok) + 7) // 8 * 8
    cfg = DreamConfig(vocab_size=V, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512, rope_theta=10000.0,
                      tie_word_embeddings=tie, mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DreamLM(cfg)
        for name, p in model.named_parameters():  # non-trivial norms and biases, so a wrong formula shows
            if "norm" in name or name.endswith("bias"):
                p.data.normal_(1.0 if "norm" in name else 0.0, 0.1)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    c = json.loads((path / "config.json").read_text())
    c.update(architectures=["DreamModel"], model_type="Dream", **config_overrides,
             auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    (path / "config.json").write_text(json.dumps(c, indent=2))
    t = json.loads((path / "tokenizer_config.json").read_text())
    t.update(tokenizer_class="DreamTokenizer", auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]})
    (path / "tokenizer_config.json").write_text(json.dumps(t, indent=2))
    for f in ("configuration_dream.py", "modeling_dream.py", "tokenization_dream.py", "generation_utils.py"):
        (path / f).write_text(REMOTE_CODE)
    return path
