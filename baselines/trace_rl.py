"""TraceRL-style trajectory replay (dLLM-RL: Wang et al., "Revolutionizing Reinforcement Learning
Framework for Diffusion Large Language Models", arXiv 2509.06949).

The rollout records the step at which each token was committed; consecutive steps are merged in groups
of ``shrink``. For merged step s the input has tokens decoded before s clean and the rest masked, and the
targets are the tokens decoded in s. Token PPO clip (eps 0.2) plus k3 KL (beta 0.01) against the OLD
policy; z-score advantages; prompts whose group accuracy is > 0.8 or < 0.2 are dropped.

With random remasking, rollout temperature 1 and shrink = 1 the summed log-prob is the exact
log-probability of the trajectory under the sampler (up to the theta-free position choice): this method
is the harness's ground-truth policy gradient on small models.
That holds under ``train.rollout.decoding=method`` (this method's own rule). Under the harness's default
shared rule (low-confidence remasking at 0.9, the same for every method) the replayed log-probs are those
of the temperature-1 policy at the steps the rollout committed: a surrogate, like every other method's.

Deviations from the reference code:

1. group accuracy is the mean reward of the group (identical for 0/1 rewards);
2. its own rollout rule (``train.rollout.decoding=method``) is random remasking at temperature 1, where replay is exact;
3. the policy term and the KL are token means over the whole batch; the reference averages the policy term
   per (sample, merged step) row and sums the KL within a row;
4. one optimiser step per rollout batch (mu = 1): the ratio is then 1 and its clip and the KL (against the
   old policy) are inert, so the gradient equals trajectory REINFORCE with z-scored advantages; the
   reference takes several optimiser steps per rollout over minibatches of rows, where clip and KL act;
5. ``shrink`` defaults to 8 (the reference) only where the rollout has more than 16 steps; on shorter
   rollouts to half the steps, so that at least two steps are replayed (with shrink >= steps the whole
   trajectory is one step, its input the fully masked completion, and the method is d1's one-step proxy
   without prompt masking). An explicit shrink >= the rollout's steps is an error;
6. end-of-text tokens are replayed as targets like any other; the reference excludes them, and it
   penalises truncated responses, which the harness's task rewards do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import trajectory_logps
from lfpo_bench.method import Method, group_view, kl_k3, masked_mean, ppo_clip, scored_tokens, zscore
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, UserError, float_


@dataclass(frozen=True)
class TraceRLConfig:
    shrink: int | None = None  # consecutive commit steps merged into one replayed step (None: 8, or steps // 2 on rollouts of <= 16 steps)
    eps: float = 0.2  # PPO clip range
    kl_beta: float = 0.01  # weight of the k3 KL against the old (rollout-time) policy
    acc_low: float = 0.2  # drop prompts whose group accuracy is below this ...
    acc_high: float = 0.8  # ... or above this
    mu: int = 1  # inner iterations per rollout batch
    temperature: float = 1.0  # rollout temperature (1.0: replay is exact)
    remasking: str = "random"  # rollout remasking (random: replay is exact)
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no; method.scored_tokens)

    def __post_init__(self):
        if self.shrink is not None and self.shrink < 1:
            raise ValueError(f"trace_rl.shrink must be >= 1, got {self.shrink}")


@METHODS.register("trace_rl")
class TraceRL(Method):
    """TraceRL: PPO on the replayed decoding trajectory."""

    Config = TraceRLConfig
    uses_ref = False  # its KL is against the old (rollout-time) policy, kept in ``prepare``

    def advantages(self, rewards, G):
        return zscore(rewards, G)

    def keep_groups(self, rewards, G):
        acc = group_view(rewards.float(), G).mean(1)
        return (acc >= self.cfg.acc_low) & (acc <= self.cfg.acc_high)

    def shrink_for(self, steps: int) -> int:
        """The merge size at a rollout of ``steps`` denoising steps (see deviation 5)."""
        if self.cfg.shrink is not None:
            return self.cfg.shrink
        return 8 if steps > 16 else max(1, steps // 2)

    def check_rollout(self, decoding) -> None:
        if self.cfg.shrink is not None and self.cfg.shrink >= decoding.steps > 1:
            raise UserError(f"trace_rl.shrink={self.cfg.shrink} merges all {decoding.steps} rollout steps into one replayed "
                            "step, which makes TraceRL the one-step proxy of diffu-GRPO; use --set shrink="
                            f"{max(1, decoding.steps // 2)} (at most {decoding.steps - 1}), drop it for the default, or roll out "
                            "with more steps")

    def _logps(self, ctx, mb):
        return trajectory_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.commit_step,
                                mask_id=mb.mask_id, shrink=self.shrink_for(mb.steps), n_steps=mb.steps if ctx.lockstep else None)

    def prepare(self, ctx, mb, m):
        with torch.no_grad():
            return {"old": self._logps(ctx, mb)}

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = self._logps(ctx, mb)
        pg, clipped = ppo_clip(lp, state["old"], mb.advantages.to(lp.device)[:, None], self.cfg.eps)
        kl = kl_k3(lp, state["old"])
        cm = scored_tokens(mb, self.cfg.count_padding)
        return LossOut(masked_mean(pg + self.cfg.kl_beta * kl, cm),
                       {"kl": float_(masked_mean(kl, cm)), "clip_frac": float_(masked_mean(clipped, cm))})
