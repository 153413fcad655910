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

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .models.tiny.cache import DEFAULTS, PretrainConfig, checkpoint_path, default_config
from .progress import progress_bar
from .types import UserError

__all__ = ["DEFAULTS", "PretrainConfig", "checkpoint_path", "default_config", "ensure_tiny", "pretrain", "with_overrides"]

log = logging.getLogger(__name__)


def ensure_tiny(task: str, quiet: bool = False, steps: int | None = None) -> Path:
    """The cached tiny checkpoint for ``task`` (its default pretraining, or the same with ``steps`` optimiser
    steps: fewer make a weaker start), pretraining it first if missing."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise UserError(f"tiny:{task}@{steps}: the pretraining steps must be a whole number >= 1")
    cfg = with_overrides(default_config(task), steps=steps)
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


def pretrain(cfg: PretrainConfig, out_dir: str | Path, show_progress: bool = True) -> dict:
    """Train a fresh tiny model on ``cfg.task`` and save it (plus ``pretrain.json``) to ``out_dir``."""
    from .likelihood import sft_batch, sft_loss
    from .models.save import save_model
    from .models.tiny.build import new_tiny
    from .registry import TASKS

    out_dir = Path(out_dir)
    check_pretrain_out(out_dir)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise UserError(f"pretraining needs steps >= 1 and batch_size >= 1, got steps={cfg.steps}, batch_size={cfg.batch_size}")
    task = TASKS.get(cfg.task)()
    if not getattr(task, "synthetic", False):
        raise UserError(f"pretraining needs a synthetic task; {cfg.task!r} is not one")
    lm = new_tiny(cfg.seed, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads)
    lm.train()
    train, train_sha = task.load_with_hash(task.train_split)
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
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")  # concurrent pretrainers never share a folder
    save_model(lm, tmp)
    info = {"config": asdict(cfg), "train_sha256": train_sha, "seconds": round(time.time() - t0, 1), "final_loss": sum(losses[-10:]) / min(10, len(losses))}
    (tmp / "pretrain.json").write_text(json.dumps(info, indent=2))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # atomic publish: a half-written checkpoint is never picked up
    return info


def check_pretrain_out(out_dir: Path) -> None:
    """``--out`` must be new, or a checkpoint an earlier pretraining wrote (its ``pretrain.json``): nothing
    else is ever replaced. Checked before any work."""
    if out_dir.exists() and not (out_dir.is_dir() and (out_dir / "pretrain.json").is_file()):
        raise UserError(f"--out {out_dir}: exists and is not a tiny checkpoint written by `lfpo-bench pretrain`; "
                        "it is left as it is: choose a new folder")
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"--out {out_dir}: cannot create it under {parent} (not a writable folder); choose another path")


def with_overrides(cfg: PretrainConfig, **kw) -> PretrainConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
