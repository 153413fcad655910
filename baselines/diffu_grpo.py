"""diffu-GRPO (d1: Zhao et al., "d1: Scaling Reasoning in Diffusion Large Language Models via
Reinforcement Learning", arXiv 2504.12216).

Per-token log-probability proxy from ONE forward pass: the whole completion masked and each prompt token
masked with probability ``p_mask_prompt``; token-level PPO clip plus beta * k3 KL to the reference (the
base model), summed over tokens up to the first EOS and divided by their count in the micro-batch. A
fresh mask seed per inner iteration, shared by the current, old and reference passes; old log-probs come
from rollout time (computed before the first optimiser step, one per iteration's mask).

Deviations from the reference code:

1. advantages are r - mean_group(r) without std division (as d1's code actually does);
2. masks come from an explicit generator per (update, iteration, micro-batch), never a global seed;
3. the loss is normalised per micro-batch and micro-batches are weighted by their share of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import mask_generator, one_step_logps
from lfpo_bench.method import Method, kl_k3, masked_mean, ppo_clip, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class DiffuGRPOConfig:
    eps: float = 0.5  # PPO clip range
    kl_beta: float = 0.04  # weight of the k3 KL to the reference policy
    p_mask_prompt: float = 0.15  # probability of masking each prompt token in the proxy pass
    mu: int = 12  # inner iterations per rollout batch (d1: 12 for GSM8K/MATH, 8 for Countdown/Sudoku)
    temperature: float = 0.9  # rollout temperature (d1/LLaDA setting)
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no; method.scored_tokens)
    remasking: str = "low_confidence"  # rollout remasking


@METHODS.register("diffu_grpo")
class DiffuGRPO(Method):
    """diffu-GRPO (d1): one-step masked log-prob proxy, token PPO clip, k3 KL."""

    Config = DiffuGRPOConfig

    defaults_by_family = {"countdown": {"mu": 8}, "sudoku": {"mu": 8}}  # d1's countdown and sudoku scripts

    def _logps(self, ctx, mb, it, m):
        return one_step_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mask_id=mb.mask_id,
                              p_mask_prompt=self.cfg.p_mask_prompt, gen=mask_generator(ctx.mask_seed(it, m)))

    def prepare(self, ctx, mb, m):
        return self.old_and_ref(ctx, self._logps, mb, m)

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = self._logps(ctx, mb, it, m)  # [N, L]
        adv = mb.advantages.to(lp.device)[:, None]
        pg, clipped = ppo_clip(lp, state["old"][it], adv, self.cfg.eps)
        per_tok = pg
        kl = torch.zeros_like(lp)
        if self.uses_ref:
            kl = kl_k3(lp, state["ref"][it])
            per_tok = per_tok + self.cfg.kl_beta * kl
        cm = scored_tokens(mb, self.cfg.count_padding)
        return LossOut(masked_mean(per_tok, cm), {"kl": float_(masked_mean(kl, cm)), "clip_frac": float_(masked_mean(clipped, cm)),
                                                  "pg": float_(masked_mean(pg, cm))})
