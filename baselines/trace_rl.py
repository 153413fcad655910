"""TraceRL-style trajectory replay (dLLM-RL: Wang et al., "Revolutionizing Reinforcement Learning
Framework for Diffusion Large Language Models", arXiv 2509.06949).

The rollout records the step at which each token was committed; consecutive steps are merged in groups
of ``shrink``. For merged step s the input has tokens decoded before s clean and the rest masked, and the
targets are the tokens decoded in s. Token PPO clip (eps 0.2) plus k3 KL (beta 0.01) against the OLD
policy; z-score advantages; prompts whose group accuracy is > 0.8 or < 0.2 are dropped.

With random remasking, rollout temperature 1 and shrink = 1 the summed log-prob is the exact
log-probability of the trajectory under the sampler (up to the theta-free position choice): this method
is the harness's ground-truth policy gradient on small models.
That holds under ``train.rollout_decoding=method`` (this method's own rule). Under the harness's default
shared rule (low-confidence remasking at 0.9, the same for every method) the replayed log-probs are those
of the temperature-1 policy at the steps the rollout committed: a surrogate, like every other method's.

Deviations from the reference code:

1. group accuracy is the mean reward of the group (identical for 0/1 rewards);
2. its own rollout rule (``rollout_decoding=method``) is random remasking at temperature 1, where replay is exact;
3. the policy term and the KL are token means over the whole batch; the reference averages the policy term
   per (sample, merged step) row and sums the KL within a row;
4. one optimiser step per rollout batch (mu = 1): the ratio is then 1 and its clip and the KL (against the
   old policy) are inert, so the gradient equals trajectory REINFORCE with z-scored advantages; the
   reference takes several optimiser steps per rollout over minibatches of rows, where clip and KL act;
5. end-of-text tokens are replayed as targets like any other; the reference excludes them, and it
   penalises truncated responses, which the harness's task rewards do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import trajectory_logps
from lfpo_bench.method import Method, group_view, kl_k3, masked_mean, ppo_clip, zscore
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class TraceRLConfig:
    shrink: int = 8  # consecutive commit steps merged into one replayed step
    eps: float = 0.2  # PPO clip range
    kl_beta: float = 0.01  # weight of the k3 KL against the old (rollout-time) policy
    acc_low: float = 0.2  # drop prompts whose group accuracy is below this ...
    acc_high: float = 0.8  # ... or above this
    mu: int = 1  # inner iterations per rollout batch
    temperature: float = 1.0  # rollout temperature (1.0: replay is exact)
    remasking: str = "random"  # rollout remasking (random: replay is exact)


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

    def _logps(self, ctx, mb):
        return trajectory_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.commit_step,
                                mask_id=mb.mask_id, shrink=self.cfg.shrink, n_steps=mb.steps if ctx.lockstep else None)

    def prepare(self, ctx, mb, m):
        with torch.no_grad():
            return {"old": self._logps(ctx, mb)}

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = self._logps(ctx, mb)
        pg, clipped = ppo_clip(lp, state["old"], mb.advantages.to(lp.device)[:, None], self.cfg.eps)
        kl = kl_k3(lp, state["old"])
        cm = mb.completion_mask
        return LossOut(masked_mean(pg + self.cfg.kl_beta * kl, cm),
                       {"kl": float_(masked_mean(kl, cm)), "clip_frac": float_(masked_mean(clipped, cm))})
