"""Real model families: LLaDA, Dream and DiffuCoder, each with a native implementation (no remote code is ever
imported, so nothing breaks with the installed transformers and no "trust remote code?" prompt can block a
batch job). All of them are driven by the harness's one sampler, never by their own
``generate``/``diffusion_generate``.

Loading is strict: the family comes from ``config.model_type`` (the checkpoint's path only breaks the tie
between Dream and DiffuCoder, which share an architecture); config settings that would change the maths and
that the native code does not compute are refused; missing, unexpected or mis-shaped weights are an error
unless ``LFPO_BENCH_ALLOW_WEIGHT_MISMATCH=1``.

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

# Decoding each family's authors recommend: the rule (temperature, remasking, schedule, top_p) is the default of
# `eval`/`run` for that family when not given; lengths and steps come from the task.
RECOMMENDED = {
    "llada": {"gen_length": 256, "steps": 128, "block_length": 32, "temperature": 0.0, "remasking": "low_confidence",
              "schedule": "even"},
    # Dream-v0 and DiffuCoder model cards: Dream's step schedule over the whole canvas, entropy confidence, top-p 0.95
    "dream": {"gen_length": 256, "steps": 256, "block_length": 256, "temperature": 0.2, "top_p": 0.95, "remasking": "entropy",
              "schedule": "dream"},
    "diffucoder": {"gen_length": 256, "steps": 256, "block_length": 256, "temperature": 0.3, "top_p": 0.95, "remasking": "entropy",
                   "schedule": "dream"},
}


def family_of(model_type: str | None, name: str) -> str:
    """llada | dream | diffucoder. ``config.model_type`` decides; the name only tells DiffuCoder (model_type
    "Dream" too) from Dream, and decides alone when a config has no model_type."""
    n = name.lower()
    mt = (model_type or "").lower()
    if mt == "llada":
        return "llada"
    if mt == "dream":
        return "diffucoder" if "diffucoder" in n else "dream"
    if mt:
        raise UserError(f"{name!r} has model_type={model_type!r}, which is not a supported dLLM family "
                        "(supported: llada for LLaDA, Dream for Dream and DiffuCoder)")
    for fam in ("diffucoder", "llada", "dream"):
        if fam in n:
            return fam
    raise UserError(f"cannot tell which dLLM family {name!r} belongs to: its config.json has no model_type; "
                    "supported: LLaDA (model_type llada), Dream and DiffuCoder (model_type Dream)")


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


# LLaDA config fields (official names) whose non-default values change the forward pass and that the native
# implementation does not compute: refused rather than ignored.
LLADA_UNSUPPORTED = {"include_qkv_bias": False, "scale_logits": False, "input_emb_norm": False, "block_group_size": 1,
                     "alibi": False, "rope": True, "attention_layer_norm": False, "clip_qkv": None, "norm_after": False,
                     "multi_query_attention": None}


def check_llada_config(cfg) -> None:
    bad = []
    for k, ok in LLADA_UNSUPPORTED.items():
        v = getattr(cfg, k, ok)
        if k == "multi_query_attention":
            if v and cfg.n_kv_heads != 1:
                bad.append(f"{k}={v!r} with n_kv_heads={cfg.n_kv_heads}")
        elif v != ok and not (ok is None and v is None):
            bad.append(f"{k}={v!r}")
    for k, allowed in (("layer_norm_type", ("rms",)), ("activation_type", ("silu", "swiglu")), ("block_type", ("llama",))):
        v = getattr(cfg, k, allowed[0])
        if v not in allowed:
            bad.append(f"{k}={v!r}")
    if bad:
        raise UserError("this LLaDA config sets " + ", ".join(bad) + ", which lfpo-bench's LLaDA implementation does not "
                        "compute; loading it anyway would give silently wrong logits. Supported: the settings of "
                        "LLaDA-8B-Base/Instruct and LLaDA-1.5")


def check_loading_info(info: dict, spec: str) -> None:
    """Missing, unexpected or mis-shaped weights are an error (``LFPO_BENCH_ALLOW_WEIGHT_MISMATCH=1``: a warning)."""
    parts = [(k, info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")]
    parts = [(k, sorted(map(str, v))) for k, v in parts if v]
    if not parts:
        return
    text = "; ".join(f"{len(v)} {k.replace('_keys', '')} weight(s), e.g. {', '.join(v[:3])}" for k, v in parts)
    if os.environ.get("LFPO_BENCH_ALLOW_WEIGHT_MISMATCH") == "1":
        log.warning("%s: %s (allowed by LFPO_BENCH_ALLOW_WEIGHT_MISMATCH=1: those weights are random)", spec, text)
        return
    raise UserError(f"{spec}: the checkpoint does not match the model: {text}. Missing weights would stay random. "
                    "Check that the checkpoint is complete and of a supported family; set LFPO_BENCH_ALLOW_WEIGHT_MISMATCH=1 "
                    "to load it anyway")


def load_tokenizer(path: Path):
    """The checkpoint's tokenizer without running its custom code (Dream ships a ``tokenization_dream.py``):
    ``trust_remote_code=False`` always, so transformers never asks on stdin; a custom tokenizer class falls
    back to the fast tokenizer of ``tokenizer.json``, or to Qwen2's BPE from ``vocab.json``/``merges.txt``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - custom code, or a config AutoConfig cannot read: load the files directly
        first = e
    if (path / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        from transformers import Qwen2Tokenizer

        return Qwen2Tokenizer.from_pretrained(path)
    raise UserError(f"{path}: cannot load its tokenizer without running custom code ({type(first).__name__}: {first}); "
                    "there is no tokenizer.json or vocab.json/merges.txt to load directly")


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
    path = resolve_path(spec)
    qcfg = quantization_config(load_in_4bit, device)
    qkw = {"quantization_config": qcfg, "device_map": {"": torch.device(device).index or 0}} if qcfg else {}
    if model_type is None:
        import json

        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    family = family_of(model_type, spec)
    dtype = dtype or default_dtype(device)
    if family == "llada":
        from .llada import LLaDAConfig, LLaDAModelLM

        config = LLaDAConfig.from_pretrained(path)
        check_llada_config(config)
        module, info = LLaDAModelLM.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True, **qkw)
        cls = CachedDiffusionLM
    else:
        import json

        from .dream import DreamConfig, DreamLM, check_supported

        check_supported(json.loads((path / "config.json").read_text()))
        config = DreamConfig.from_pretrained(path)
        module, info = DreamLM.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True, **qkw)
        cls = DiffusionLM
    check_loading_info(info, spec)
    tok = load_tokenizer(path)
    profile = profile_for(family, module.config, tok)
    log.info("loaded %s (%s) on %s in %s", spec, family, device, dtype)
    module = module.eval() if qcfg else module.to(device).eval()  # quantized weights are placed by device_map
    lm = cls(module, tok, profile, name=spec if not os.path.isabs(spec) else str(path))
    lm.supports_logits_range = True  # both native implementations compute the LM head on a slice
    return lm
