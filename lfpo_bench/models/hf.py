"""Real model families: LLaDA (native implementation, no remote code), Dream and DiffuCoder (remote code with
transformers 5.x shims). All of them are driven by the harness's one sampler, never by their own
``generate``/``diffusion_generate``.

``family_of`` and ``profile_for`` are pure functions of the config, the name and the tokenizer, so the
family logic is unit-tested without any checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..types import UserError
from .base import DiffusionLM, FamilyProfile

log = logging.getLogger(__name__)

# Official special-token ids of LLaDA-8B (Base/Instruct): mask, EOS (<|endoftext|>), EoT (<|eot_id|>).
LLADA_MASK, LLADA_EOS, LLADA_EOT = 126336, 126081, 126348

# Decoding settings each family's authors recommend / evaluate with (used as defaults by the CLI docs).
RECOMMENDED = {
    "llada": {"gen_length": 256, "steps": 128, "block_length": 32, "temperature": 0.0, "remasking": "low_confidence"},
    "dream": {"gen_length": 256, "steps": 256, "block_length": 256, "temperature": 0.2, "remasking": "low_confidence"},
    "diffucoder": {"gen_length": 256, "steps": 256, "block_length": 256, "temperature": 0.3, "remasking": "low_confidence"},
}


def family_of(model_type: str | None, name: str) -> str:
    """llada | dream | diffucoder, from the config's model_type and the checkpoint name."""
    n = name.lower()
    mt = (model_type or "").lower()
    if "diffucoder" in n:
        return "diffucoder"
    if mt == "llada" or "llada" in n:
        return "llada"
    if mt == "dream" or "dream" in n:
        return "dream"
    raise UserError(
        f"cannot tell which dLLM family {name!r} (model_type={model_type!r}) belongs to; supported: LLaDA, Dream, DiffuCoder"
    )


def _token_id(tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token) if hasattr(tokenizer, "convert_tokens_to_ids") else None
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if tid is None or (unk is not None and tid == unk) else int(tid)


def profile_for(family: str, config: Any, tokenizer: Any) -> FamilyProfile:
    """Mask id, EOS/EoT ids, pad, logit shift and chat use of a family, from its config and tokenizer."""
    if family == "llada":
        mask = getattr(config, "mask_token_id", None) or LLADA_MASK
        eos = getattr(config, "eos_token_id", None) or LLADA_EOS
        eot = _token_id(tokenizer, "<|eot_id|>") or LLADA_EOT
        return FamilyProfile(name="llada", mask_id=int(mask), eos_ids=tuple(dict.fromkeys([int(eos), int(eot)])), pad_id=int(eos),
                             shift_logits=False, chat=True, recommended=RECOMMENDED["llada"],
                             max_length=getattr(config, "max_sequence_length", None))
    if family in ("dream", "diffucoder"):
        mask = getattr(tokenizer, "mask_token_id", None)
        if mask is None:
            raise UserError(f"{family} tokenizer has no mask_token_id; is this a diffusion checkpoint?")
        eos = [getattr(tokenizer, "eos_token_id", None), _token_id(tokenizer, "<|im_end|>"), _token_id(tokenizer, "<|endoftext|>")]
        eos = tuple(dict.fromkeys(int(e) for e in eos if e is not None))
        pad = getattr(tokenizer, "pad_token_id", None)
        pad = int(pad) if pad is not None else eos[0]
        return FamilyProfile(name=family, mask_id=int(mask), eos_ids=eos, pad_id=pad, shift_logits=True, chat=True,
                             recommended=RECOMMENDED[family], max_length=getattr(config, "max_position_embeddings", None))
    raise UserError(f"unknown family {family!r}")


def resolve_path(spec: str) -> Path:
    """A local folder, or a hub id found in the local Hugging Face cache (never downloaded at run time)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - offline, not cached, or invalid id
        gpu = "" if torch.cuda.is_available() else (
            " This machine has no CUDA GPU either: a 7-8B model needs one (bf16, about 20 GB for evaluation, more to "
            "train). To try the whole pipeline here, use the embedded default: --model tiny (a small model the "
            "project pretrains itself on first use; findings at that scale say what the harness measures).")
        raise UserError(
            f"model {spec!r} is not a local folder and not in the local Hugging Face cache ({type(e).__name__}). "
            f"Download it where you have internet (`huggingface-cli download {spec}`) and copy the cache, or pass "
            f"--model /path/to/checkpoint.{gpu}"
        ) from None


def default_dtype(device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def apply_remote_code_shims(config) -> None:
    """transformers 5.x expects attributes that older remote-code configs lack."""
    for attr, val in (("use_cache", False), ("output_attentions", False), ("output_hidden_states", False)):
        if not hasattr(config, attr):
            setattr(config, attr, val)


class CachedDiffusionLM(DiffusionLM):
    """A DiffusionLM whose module supports the prefix KV cache (the native LLaDA)."""

    supports_cache = True

    def forward_with_cache(self, x, am, prefix_len: int):
        out = self.module(input_ids=x, attention_mask=am, prefix_len=prefix_len)
        return out.logits, out.prefix_cache

    def forward_suffix(self, x_suffix, am, cache):
        return self.module(input_ids=x_suffix, attention_mask=am, past_key_values=cache).logits


def quantization_config(load_in_4bit: bool, device):
    """bitsandbytes 4-bit NF4 (QLoRA, as d1 trains) - CUDA only."""
    if not load_in_4bit:
        return None
    if torch.device(device).type != "cuda":
        raise UserError("4-bit loading needs a CUDA device (bitsandbytes); drop load_in_4bit on this machine")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise UserError("4-bit loading needs bitsandbytes: pip install bitsandbytes") from e
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=True)


def load_hf(spec: str, model_type: str | None, device="cpu", dtype=None, load_in_4bit: bool = False) -> DiffusionLM:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_path(spec)
    qcfg = quantization_config(load_in_4bit, device)
    qkw = {"quantization_config": qcfg, "device_map": {"": torch.device(device).index or 0}} if qcfg else {}
    if model_type is None:
        import json

        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    family = family_of(model_type, spec)
    dtype = dtype or default_dtype(device)
    if family == "llada":
        from .llada import LLaDAModelLM

        module = LLaDAModelLM.from_pretrained(path, dtype=dtype, **qkw)
        tok = AutoTokenizer.from_pretrained(path)
        cls = CachedDiffusionLM
    else:
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        apply_remote_code_shims(config)
        module = AutoModel.from_pretrained(path, config=config, trust_remote_code=True, dtype=dtype, **qkw)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        cls = DiffusionLM
    profile = profile_for(family, module.config, tok)
    log.info("loaded %s (%s) on %s in %s", spec, family, device, dtype)
    module = module.eval() if qcfg else module.to(device).eval()  # quantized weights are placed by device_map
    return cls(module, tok, profile, name=spec if not os.path.isabs(spec) else str(path))
