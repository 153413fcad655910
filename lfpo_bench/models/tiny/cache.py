"""The cache of pretrained tiny checkpoints: which pretraining config each synthetic task uses, where its
checkpoint lives. ``lfpo_bench.pretrain.ensure_tiny`` pretrains a missing one."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ...paths import cache_dir
from ...types import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    task: str = "sudoku4"  # synthetic task to train on
    steps: int = 110  # optimiser steps (kept short: an imperfect start leaves room for RL)
    batch_size: int = 128  # examples per step
    lr: float = 3e-4  # AdamW learning rate (constant after warmup)
    warmup: int = 10  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    t_min: float = 0.05  # lower end of the mask ratio t ~ U(t_min, 1)
    seed: int = 0  # init, batch order and masks
    d_model: int = 128  # tiny model width
    n_layers: int = 4  # tiny model depth
    n_heads: int = 4  # attention heads

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


# Per-task defaults, chosen so each lands in the 20-60% band at the task's default steps (see README).
DEFAULTS: dict[str, PretrainConfig] = {
    "sudoku4": PretrainConfig(task="sudoku4", steps=110),
    "countdown3-mini": PretrainConfig(task="countdown3-mini", steps=600),
    "toy-code": PretrainConfig(task="toy-code", steps=600),
}


def default_config(task: str) -> PretrainConfig:
    if task in DEFAULTS:
        return DEFAULTS[task]
    from ...registry import TASKS

    t = TASKS.get(task)
    if not getattr(t, "synthetic", False):
        raise UserError(
            f"task {task!r} is not synthetic: the tiny model is pretrained on a synthetic task "
            f"({', '.join(sorted(DEFAULTS))})"
        )
    return PretrainConfig(task=task)


def train_data_sha(task: str) -> str:
    """The sha256 of the examples the tiny model is pretrained on (``task``'s training split), so that a change
    to a synthetic task's generator never reuses a checkpoint pretrained on the old data."""
    from ...registry import TASKS

    t = TASKS.get(task)()
    return t.load_with_hash(t.train_split)[1]


def checkpoint_path(cfg: PretrainConfig) -> Path:
    """The cached checkpoint of ``cfg``: its key and the hash of the data it trains on."""
    return cache_dir() / "models" / f"tiny-{cfg.task}-{cfg.key()}-{train_data_sha(cfg.task)[:8]}"
