"""A tiny, randomly initialised checkpoint in the official LLaDA layout, with a character-level HF
tokenizer and a LLaDA-style chat template. It exercises the real-model code path (config.json with
``model_type: llada``, safetensors with official weight names, ``AutoTokenizer``, chat template, EOS/EoT
handling, the prefix KV cache) on a CPU, where an 8B checkpoint cannot be had."""

from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<unk>", "<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|mdm_mask|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def hub_char_tokenizer(specials: list[str], chat_template: str, *, bos: str, eos: str, pad: str, mask: str, extra: list[str]):
    """A character-level fast tokenizer with a family's special tokens and chat template (tiny test checkpoints
    of the real families: LLaDA here, Dream in ``models/dream/tiny.py``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n", "\t"] + [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token=bos, eos_token=eos, pad_token=pad,
                                  mask_token=mask, additional_special_tokens=extra)
    tok.chat_template = chat_template
    return tok


def char_tokenizer():
    return hub_char_tokenizer(SPECIALS, CHAT_TEMPLATE, bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>",
                              mask="<|mdm_mask|>", extra=["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"])


def make_tiny_llada(path: str | Path, seed: int = 0, d_model: int = 64, n_layers: int = 2, n_heads: int = 4) -> Path:
    from .configuration_llada import LLaDAConfig
    from .modeling_llada import LLaDAModelLM

    tok = char_tokenizer()
    V = (len(tok) + 7) // 8 * 8
    cfg = LLaDAConfig(d_model=d_model, n_heads=n_heads, n_layers=n_layers, mlp_hidden_size=2 * d_model, vocab_size=V,
                      embedding_size=V, rope_theta=10000.0, max_sequence_length=2048,
                      mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LLaDAModelLM(cfg)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
