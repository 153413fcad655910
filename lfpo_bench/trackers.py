"""Experiment trackers for `run` and `sweep` (``--report-to tensorboard|wandb|none``).

Each tracker receives the numeric fields of every ``log.jsonl`` entry (reward, loss, KL, share of groups
without signal, samples/s, validation accuracy) at step = update, and the run's config once. Both work
offline: TensorBoard writes event files under ``<run>/tensorboard``; W&B runs in offline mode unless the
user has set ``WANDB_MODE`` (sync later with ``wandb sync <run>/wandb/offline-run-*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .types import UserError

KINDS = ("none", "tensorboard", "wandb")


class TensorBoard:
    def __init__(self, run_dir: Path, config: dict, name: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--report-to tensorboard needs the tensorboard package: pip install 'lfpo-bench[track]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, config: dict, name: str):
        try:
            import wandb
        except ImportError:
            raise UserError("--report-to wandb needs the wandb package: pip install 'lfpo-bench[track]'") from None
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lfpo-bench"), name=name, dir=str(run_dir),
                              config=config, reinit="finish_previous")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()


def check_report_to(report_to: str) -> list[str]:
    """The tracker names of ``report_to`` (comma-separated); an unknown name or a missing package is a
    ``UserError`` now, before any model work."""
    import importlib.util

    kinds = [k.strip().lower() for k in (report_to or "none").split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UserError(f"--report-to {','.join(bad)}: unknown tracker; use one of {', '.join(KINDS)}")
    for k, mod in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if k in kinds and importlib.util.find_spec(mod) is None:
            raise UserError(f"--report-to {k} needs the {mod} package: pip install 'lfpo-bench[track]'")
    return kinds


def make_trackers(report_to: str, run_dir: Path, config: dict[str, Any], name: str) -> list:
    """Trackers for one run; ``report_to`` is a comma-separated subset of ``KINDS``."""
    kinds = check_report_to(report_to)
    run_dir.mkdir(parents=True, exist_ok=True)
    cls = {"tensorboard": TensorBoard, "wandb": WandB}
    return [cls[k](run_dir, config, name) for k in kinds if k != "none"]
