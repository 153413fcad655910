"""wd1 (Tang et al., "wd1: Weighted Policy Optimization for Reasoning in Diffusion Language Models",
arXiv 2507.08838).

The same one-step proxy as diffu-GRPO, summed over completion tokens (up to the first EOS): l_i.
Weights w+ = softmax(A) and w- = softmax(-A) over the group; L = -sum w+_i l_i + sum w-_i l_i, averaged
over groups. No ratio, no clip, no KL; mu iterations with fresh masks and no importance correction.

Deviations from the reference code:

1. advantages are r - mean_group(r) (no std division), as in the reference code;
2. masks come from an explicit generator per (update, iteration, micro-batch);
3. ``mu`` is 12 on every task; the reference's Sudoku script uses 8 (``--set mu=8`` reproduces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import mask_generator, one_step_logps
from lfpo_bench.method import Method, group_view
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class WD1Config:
    p_mask_prompt: float = 0.15  # probability of masking each prompt token in the proxy pass
    mu: int = 12  # inner iterations per rollout batch
    temperature: float = 0.9  # rollout temperature
    remasking: str = "low_confidence"  # rollout remasking


def wd1_coefficients(adv: torch.Tensor, G: int) -> torch.Tensor:
    """c_i = w-_i - w+_i with w+- = softmax(+-A) within each group: the loss is sum_i c_i l_i per group."""
    a = group_view(adv, G)
    return (torch.softmax(-a, 1) - torch.softmax(a, 1)).reshape(-1)


@METHODS.register("wd1")
class WD1(Method):
    """wd1: softmax-weighted positive/negative log-likelihood proxy, no ratio or KL."""

    Config = WD1Config

    def on_batch(self, batch) -> None:
        batch.extras["wd1_c"] = wd1_coefficients(batch.advantages, batch.group_size)

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = one_step_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mask_id=mb.mask_id,
                            p_mask_prompt=self.cfg.p_mask_prompt, gen=mask_generator(ctx.mask_seed(it, m)))
        ell = (lp * mb.completion_mask).sum(1)  # [N] summed proxy log-likelihood
        c = mb.extras["wd1_c"].to(lp.device)
        # groups average: sum over a group of c_i l_i, mean over groups == G * mean over samples
        loss = mb.group_size * (c * ell).mean()
        return LossOut(loss, {"ell_mean": float_(ell.mean())})
