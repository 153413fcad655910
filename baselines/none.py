"""``none``: no training. ``lfpo-bench run --method none`` evaluates the starting policy (before and
after are the same model), the row every comparison table needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.method import Method
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut


@dataclass(frozen=True)
class NoneConfig:
    pass


@METHODS.register("none")
class NoTraining(Method):
    """No training: evaluate the starting policy."""

    Config = NoneConfig
    needs_rollouts = False
    trains = False

    def loss(self, ctx, mb, state, it, m, chunk=0):
        return LossOut(torch.zeros((), requires_grad=True), {})
