"""Pretraining the embedded default: masked-diffusion SFT of the tiny model on a synthetic task.

Objective (LLaDA SFT): for each example draw t ~ U(t_min, 1), mask each answer token with probability t
(the prompt is never masked), and minimise the cross-entropy on masked answer tokens weighted 1/t, summed
and divided by the number of answer tokens. Answers are padded to the task's ``gen_length`` with EOS, as
LLaDA's SFT pads with EOS, so the model learns where a completion ends.

The defaults stop early on purpose: the result is an *imperfect* starting policy (20-60% solved on the
validation split at the task's default steps), so RL has room to improve. Deterministic for a seed on
CPU. Checkpoints are cached under ``<cache>/models/<name>`` and rebuilt on first use by any command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .paths import cache_dir
from .progress import progress_bar
from .types import UserError

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
    from .registry import TASKS

    t = TASKS.get(task)
    if not getattr(t, "synthetic", False):
        raise UserError(
            f"task {task!r} is not synthetic: the tiny model is pretrained on a synthetic task "
            f"({', '.join(sorted(DEFAULTS))})"
        )
    return PretrainConfig(task=task)


def checkpoint_path(cfg: PretrainConfig) -> Path:
    return cache_dir() / "models" / f"tiny-{cfg.task}-{cfg.key()}"


def ensure_tiny(task: str, quiet: bool = False) -> Path:
    """The cached default tiny checkpoint for ``task``, pretraining it first if missing."""
    cfg = default_config(task)
    path = checkpoint_path(cfg)
    if (path / "config.json").exists():
        return path
    msg = (f"first use of the embedded default for {task!r}: pretraining the tiny model ({cfg.steps} steps of the "
           f"masked-diffusion SFT objective on the synthetic task {cfg.task!r}; about 1-3 min on 2 idle cores, an "
           f"estimate follows after the first steps), cached in {path} for every later run")
    _say(msg, quiet)
    pretrain(cfg, path, show_progress=not quiet)
    return path


def _say(msg: str, quiet: bool) -> None:
    if quiet:
        log.warning(msg)
    else:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]{msg}[/yellow]")


def sft_batch(lm, task, examples, gen_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt ids/mask (left padded) and answer ids padded with EOS to ``gen_length``."""
    style = lm.profile.prompt_style
    pid, pmask = lm.encode_prompts([task.prompt(e, style) for e in examples], gen_length)
    eos = lm.profile.eos_ids[0]
    ans = torch.full((len(examples), gen_length), eos, dtype=torch.long)
    for i, e in enumerate(examples):
        ids = lm.tokenizer(task.sft_target(e))["input_ids"][:gen_length]
        ans[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return pid, pmask, ans


def masked_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of CE / t, divided by B * L.

    logits [B, L, V], targets [B, L], masked [B, L] bool, t [B, 1] mask ratio of each row."""
    B, L = targets.shape
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none").view(B, L)
    return (ce * masked / t).sum() / (B * L)


def sft_loss(lm, pid, pmask, ans, gen: torch.Generator, t_min: float) -> torch.Tensor:
    """LLaDA SFT loss with t ~ U(t_min, 1) per row; the prompt is never masked."""
    B, L = ans.shape
    t = (t_min + (1 - t_min) * torch.rand(B, 1, generator=gen)).to(ans.device)
    masked = torch.rand(B, L, generator=gen).to(ans.device) < t
    x = torch.cat([pid, torch.where(masked, torch.full_like(ans, lm.mask_id), ans)], 1)
    am = torch.cat([pmask, torch.ones_like(ans)], 1)
    return masked_diffusion_loss(lm(x, am)[:, pid.shape[1] :], ans, masked, t)


def pretrain(cfg: PretrainConfig, out_dir: str | Path, show_progress: bool = True) -> dict:
    """Train a fresh tiny model on ``cfg.task`` and save it (plus ``pretrain.json``) to ``out_dir``."""
    from .models.loader import new_tiny, save_model
    from .registry import TASKS

    task = TASKS.get(cfg.task)()
    if not getattr(task, "synthetic", False):
        raise UserError(f"pretraining needs a synthetic task; {cfg.task!r} is not one")
    lm = new_tiny(cfg.seed, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads)
    lm.train()
    train = task.load(task.train_split)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    t0 = time.time()
    losses = []
    with progress_bar(f"pretrain tiny on {cfg.task}", total=cfg.steps, enabled=show_progress) as bar:
        for step in range(cfg.steps):
            idx = torch.randint(len(train), (cfg.batch_size,), generator=gen).tolist()
            pid, pmask, ans = sft_batch(lm, task, [train[i] for i in idx], task.gen_length)
            loss = sft_loss(lm, pid, pmask, ans, gen, cfg.t_min)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.advance(1, loss=f"{losses[-1]:.3f}")
            if step == 9 and cfg.steps > 20:  # say how long, measured on this machine under its current load
                eta = (time.time() - t0) / 10 * (cfg.steps - 10)
                _say(f"pretraining {cfg.task!r}: {cfg.steps} steps, about {eta / 60:.1f} more minutes at the current speed",
                     quiet=not show_progress)
    lm.eval()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")  # concurrent pretrainers never share a folder
    save_model(lm, tmp)
    info = {"config": asdict(cfg), "seconds": round(time.time() - t0, 1), "final_loss": sum(losses[-10:]) / min(10, len(losses))}
    (tmp / "pretrain.json").write_text(json.dumps(info, indent=2))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # atomic publish: a half-written checkpoint is never picked up
    return info


def with_overrides(cfg: PretrainConfig, **kw) -> PretrainConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
