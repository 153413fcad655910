"""coupled-GRPO (DiffuCoder: Gong et al., "DiffuCoder: Understanding and Improving Masked Diffusion
Models for Code Generation", arXiv 2506.20639).

Per-token log-probability from three passes: the completion fully masked, masked where R < t, and the
complement (t ~ U(0.2, 0.8), R uniform per token, prompt never masked):
logp = 1/2 [logp^(0) + (logp^(1)/t if masked in (1) else logp^(2)/(1-t))]. Token PPO clip (eps 0.5) and
beta 0.01 k3 KL to the reference; leave-one-out (RLOO) advantages; mu = 2.

Deviations from the reference code:

1. the three passes run as one concatenated batch;
2. the reference defaults (G=10, lr 1e-6, full fine-tune, code reward = 2 pass rate + 0.5 format) are
   trainer/task settings here, not method fields, so that methods share one budget;
3. the reference model is the starting policy throughout; the reference code syncs it to the current
   policy every 64 steps;
4. t is drawn per (iteration, micro-batch) and per sample; the reference draws one t per iteration for the
   whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import coupled_logps, mask_generator
from lfpo_bench.method import Method, kl_k3, masked_mean, ppo_clip, rloo, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class CoupledGRPOConfig:
    eps: float = 0.5  # PPO clip range
    kl_beta: float = 0.01  # weight of the k3 KL to the reference policy
    t_low: float = 0.2  # mask ratio t ~ U(t_low, t_high)
    t_high: float = 0.8
    mu: int = 2  # inner iterations per rollout batch
    temperature: float = 1.0  # rollout temperature
    remasking: str = "low_confidence"  # rollout remasking
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no; method.scored_tokens)


@METHODS.register("coupled_grpo")
class CoupledGRPO(Method):
    """coupled-GRPO (DiffuCoder): complementary-mask log-prob, token PPO clip, RLOO."""

    Config = CoupledGRPOConfig

    def advantages(self, rewards, G):
        return rloo(rewards, G)

    def _logps(self, ctx, mb, it, m):
        return coupled_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mask_id=mb.mask_id,
                             gen=mask_generator(ctx.mask_seed(it, m)), t_low=self.cfg.t_low, t_high=self.cfg.t_high)

    def prepare(self, ctx, mb, m):
        return self.old_and_ref(ctx, self._logps, mb, m)

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = self._logps(ctx, mb, it, m)
        pg, clipped = ppo_clip(lp, state["old"][it], mb.advantages.to(lp.device)[:, None], self.cfg.eps)
        kl = kl_k3(lp, state["ref"][it]) if self.uses_ref else torch.zeros_like(lp)
        cm = scored_tokens(mb, self.cfg.count_padding)
        return LossOut(masked_mean(pg + self.cfg.kl_beta * kl, cm),
                       {"kl": float_(masked_mean(kl, cm)), "clip_frac": float_(masked_mean(clipped, cm))})
