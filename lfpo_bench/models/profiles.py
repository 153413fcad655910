"""Training defaults of each model family (torch-free): what ``run`` trains with unless a config says
otherwise. A task declares only its data, scoring and decoding shape; how hard to train a model is the
model's business, so ``--task gsm8k --model tiny`` trains at the tiny model's rate, not LLaDA's.

- ``tiny``: the embedded 0.8M-parameter model on two CPU cores: 60 updates of 16 prompts x G=8 at lr 1e-4.
- ``llada``: the LLaDA-based reference papers' RL settings (BASELINES.md): G=6, AdamW lr 3e-6, weight decay
  0.1, grad-norm clip 0.2, LoRA r=128 / alpha=64 (the family's LoRA default), 8 prompts per update.
- ``dream`` / ``diffucoder``: the same as LLaDA's (coupled-GRPO's DiffuCoder recipe is a preset,
  ``docs/reproduce.md``); they differ in decoding, which the family's ``FamilyProfile.recommended`` holds.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY = {"updates": 60, "prompts_per_update": 16, "group_size": 8, "lr": 1e-4, "val_every": 10, "val_limit": 200,
        "checkpoint_every": 10}
LLADA = {"group_size": 6, "lr": 3e-6, "weight_decay": 0.1, "grad_clip": 0.2, "prompts_per_update": 8, "micro_batch": 6,
         "rollout.batch": 48, "updates": 200, "val_every": 50, "val_limit": 100, "checkpoint_every": 25}
TRAIN_DEFAULTS: dict[str, dict] = {"tiny": TINY, "llada": LLADA, "dream": LLADA, "diffucoder": LLADA}


def family_of_spec(spec: str) -> str:
    """tiny | llada | dream | diffucoder for a ``--model`` spec, without loading it (a folder's config.json is read)."""
    if spec == "tiny-llada":
        return "llada"
    if spec == "tiny-random" or spec == "tiny" or spec.startswith("tiny:"):
        return "tiny"
    from .hf import family_of

    path = Path(spec).expanduser()
    if path.is_dir():
        adapter = path / "adapter_config.json"
        if adapter.exists() and not (path / "config.json").exists():
            try:
                base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
            except (OSError, ValueError):
                base = ""
            return family_of_spec(base) if base else "llada"
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        except (OSError, ValueError):
            return "llada"  # the loader reports a damaged checkpoint with its own message
        if model_type == "lfpo_tiny_dlm":
            return "tiny"
        return family_of(model_type, spec)
    return family_of(None, spec) if "/" in spec else "llada"


def train_defaults(spec: str) -> tuple[str, dict]:
    family = family_of_spec(spec)
    return family, dict(TRAIN_DEFAULTS.get(family, LLADA))
