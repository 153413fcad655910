"""Building and loading the tiny model (its family profile, random init, a saved folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..base import DiffusionLM, FamilyProfile
from ..tokenizer import CharTokenizer


def tiny_profile(config, tokenizer: CharTokenizer) -> FamilyProfile:
    return FamilyProfile(
        name="tiny",
        mask_id=tokenizer.mask_token_id,
        eos_ids=(tokenizer.eos_token_id,),
        pad_id=tokenizer.pad_token_id,
        shift_logits=False,
        chat=False,
        prompt_style="compact",
        sep_id=tokenizer.sep_token_id,
        max_length=config.max_position_embeddings,
        recommended={"temperature": 0.0, "remasking": "low_confidence"},
    )


def new_tiny(seed: int = 0, **overrides) -> DiffusionLM:
    """A randomly initialised tiny model (deterministic for ``seed``)."""
    from . import TinyDLM, TinyDLMConfig

    tok = CharTokenizer()
    cfg = TinyDLMConfig(
        vocab_size=(tok.vocab_size + 7) // 8 * 8,
        mask_token_id=tok.mask_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        sep_token_id=tok.sep_token_id,
        **overrides,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # init only, inside a forked RNG: the global RNG is left untouched
        module = TinyDLM(cfg)
    return DiffusionLM(module, tok, tiny_profile(cfg, tok), name="tiny-random")


def _load_tiny_dir(path: Path, device, dtype) -> DiffusionLM:
    from . import TinyDLM

    module = TinyDLM.from_pretrained(path, dtype=dtype or torch.float32)
    tok = CharTokenizer.from_pretrained(path)
    return DiffusionLM(module.to(device).eval(), tok, tiny_profile(module.config, tok), name=str(path))
