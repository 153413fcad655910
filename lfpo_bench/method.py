"""The method interface and the small pieces of maths methods share (advantages, PPO clip, k3 KL).

A method is one file: a frozen ``Config`` dataclass (each field commented) and a ``Method`` subclass with a
``loss``. The trainer owns everything else (rollouts, rewards, optimiser, old/ref/EMA parameters,
micro-batching, checkpoints), so all methods are compared under the same loop. Hooks, all optional:

- ``advantages(rewards, G)``: per-sample advantages (default: reward minus group mean, no std division);
- ``keep_groups(rewards, G)``: which groups to train on (default: all);
- ``on_batch(batch)``: full-batch, group-level quantities (wd1's softmax weights) before micro-batching;
- ``prepare(ctx, mb, m)``: no-grad work once per rollout micro-batch (old/ref log-probs per iteration);
- ``chunks(mb)``: how many backward passes ``loss`` is split into (LFPO: one per stratum);
- ``loss(ctx, mb, state, it, m, chunk)``: the objective for inner iteration ``it``;
- ``after_step(ctx)``: after each optimiser step (LFPO: EMA update of the old policy).

The protocol the trainer and ``run`` read, all declared here (docs/plugins.md):

- ``trains`` (class): False for a method that trains nothing (``none``): ``run`` evaluates the start only;
- ``needs_rollouts`` (class): False trains on the task's reference completions (``sft``);
- ``rollout_policy`` (class): "current" or "old" (the EMA copy) samples the rollouts;
- ``uses_old`` (class): keep a parameter copy updated by ``ctx.ema_update``;
- ``uses_ref`` (property): keep a frozen reference policy (default: the config has a positive ``kl_beta``);
- ``mu`` (property): inner iterations per rollout batch (default: the config's ``mu``, else 1);
- ``temperature`` / ``remasking`` (properties): the method's own rollout rule, used under
  ``train.rollout.decoding=method`` (default: the config's fields, else 1.0 / low_confidence);
- ``defaults_by_family`` (class): config defaults per task family (``Task.family``: sudoku, countdown, math,
  code), the reference scripts' per-task settings; ``task_defaults(task)`` returns the ones that apply.
  They are defaults: anything the user sets wins, and the run records where each value came from.

The registry refuses a class that is not a ``Method`` subclass, and names the method (``name``) by its
registration.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import torch

from .types import LossOut, RolloutBatch


class TrainContext(Protocol):
    policy: Any  # DiffusionLM being trained
    device: torch.device
    update: int  # index of the current rollout batch
    lockstep: bool  # forwards are collectives (sharded parameters): the number of passes must not depend on the data

    def use(self, which: str) -> AbstractContextManager:
        """Temporarily run the policy with the "old" (EMA) or "ref" (frozen initial) parameters."""

    def mask_seed(self, it: int, m: int) -> int:
        """Seed of the masks of inner iteration ``it`` on micro-batch ``m`` (same for every pass)."""

    def ema_update(self, rate: float) -> None:
        """old <- rate * old + (1 - rate) * current."""


class Method:
    name: ClassVar[str] = ""  # set by the registration (``@METHODS.register("name")``)
    Config: ClassVar[type]
    trains: ClassVar[bool] = True
    needs_rollouts: ClassVar[bool] = True
    rollout_policy: ClassVar[str] = "current"
    uses_old: ClassVar[bool] = False
    defaults_by_family: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def task_defaults(cls, task) -> dict[str, Any]:
        """Config defaults for ``task``, by its family (never by a task-name prefix)."""
        return dict(cls.defaults_by_family.get(getattr(task, "family", ""), {}))

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else self.Config()

    # knobs the trainer reads; a Config may omit them
    @property
    def uses_ref(self) -> bool:
        """A frozen reference policy is kept when the config has a positive ``kl_beta``."""
        return float(getattr(self.cfg, "kl_beta", 0.0)) > 0

    @property
    def mu(self) -> int:
        return int(getattr(self.cfg, "mu", 1))

    @property
    def temperature(self) -> float:
        return float(getattr(self.cfg, "temperature", 1.0))

    @property
    def remasking(self) -> str:
        return str(getattr(self.cfg, "remasking", "low_confidence"))

    def check_rollout(self, decoding) -> None:
        """Called once by the trainer, before any work, with the rollout ``Decoding``: raise ``UserError``
        naming the fix when this method's settings make no sense at that decoding (TraceRL's ``shrink``)."""
        return None

    def advantages(self, rewards: torch.Tensor, G: int) -> torch.Tensor:
        return group_center(rewards, G)

    def keep_groups(self, rewards: torch.Tensor, G: int) -> torch.Tensor:
        return torch.ones(rewards.numel() // G, dtype=torch.bool)

    def on_batch(self, batch: RolloutBatch) -> None:
        return None

    def prepare(self, ctx: TrainContext, mb: RolloutBatch, m: int) -> dict:
        return {}

    def chunks(self, mb: RolloutBatch) -> int:
        return 1

    def loss(self, ctx: TrainContext, mb: RolloutBatch, state: dict, it: int, m: int, chunk: int = 0) -> LossOut:
        raise NotImplementedError

    def after_step(self, ctx: TrainContext) -> None:
        return None

    def old_and_ref(self, ctx: TrainContext, estimate, mb: RolloutBatch, m: int) -> dict:
        """For PPO-style methods: ``estimate(ctx, mb, it, m)`` under no grad, once per inner iteration with that
        iteration's masks, with the current (pre-update) parameters ("old", as at rollout time) and, when the
        method uses a reference policy, with the reference parameters."""
        with torch.no_grad():
            old = [estimate(ctx, mb, it, m) for it in range(self.mu)]
            ref = []
            if self.uses_ref:
                with ctx.use("ref"):
                    ref = [estimate(ctx, mb, it, m) for it in range(self.mu)]
        return {"old": old, "ref": ref}


# ---- shared maths ------------------------------------------------------------------------------------
def group_view(x: torch.Tensor, G: int) -> torch.Tensor:
    if x.numel() % G:
        raise ValueError(f"{x.numel()} rewards do not split into groups of {G}")
    return x.view(-1, G)


def group_center(rewards: torch.Tensor, G: int, scale_std: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """A = r - mean_group(r), divided by the group std (unbiased=False) + eps only if ``scale_std``."""
    r = group_view(rewards.float(), G)
    a = r - r.mean(1, keepdim=True)
    if scale_std:
        a = a / (r.std(1, unbiased=False, keepdim=True) + eps)
    return a.reshape(-1)


def rloo(rewards: torch.Tensor, G: int) -> torch.Tensor:
    """Leave-one-out advantage: r_i - mean_{j != i} r_j."""
    r = group_view(rewards.float(), G)
    others = (r.sum(1, keepdim=True) - r) / (G - 1)
    return (r - others).reshape(-1)


def zscore(rewards: torch.Tensor, G: int, eps: float = 1e-4) -> torch.Tensor:
    return group_center(rewards, G, scale_std=True, eps=eps)


def zero_signal_groups(rewards: torch.Tensor, G: int) -> torch.Tensor:
    """Groups whose rewards are all equal: [n_groups] bool."""
    r = group_view(rewards.float(), G)
    return (r.max(1).values - r.min(1).values) <= 1e-12


def ppo_clip(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level clipped surrogate to minimise: -min(rho*A, clip(rho, 1-eps, 1+eps)*A); also the clip
    indicator. ``adv`` broadcasts against ``logp`` (pass ``A[:, None]`` for per-sequence advantages)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - eps, 1 + eps) * adv
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(theta || ref): exp(ref - theta) - (ref - theta) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def scored_tokens(mb: RolloutBatch, count_padding: bool) -> torch.Tensor:
    """The completion positions a loss counts, [N, L] (the one place every method decides it): up to and
    including the first EOS (``completion_mask``), or with ``count_padding`` every position, the EOS padding
    after the answer included. Each method's ``count_padding`` defaults to its reference code's choice."""
    return torch.ones_like(mb.completion_mask) if count_padding else mb.completion_mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of x over mask, divided by the mask's total (the micro-batch's token count)."""
    m = mask.float()
    return (x * m).sum() / m.sum().clamp(min=1)
