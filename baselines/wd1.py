"""wd1 (Tang et al., "wd1: Weighted Policy Optimization for Reasoning in Diffusion Language Models",
arXiv 2507.08838).

The same one-step proxy as diffu-GRPO, summed over completion tokens (up to the first EOS): l_i.
Weights w+ = softmax(A) and w- = softmax(-A); L = -sum w+_i l_i + sum w-_i l_i. The softmax runs over
the whole batch on this rank, as the reference trainer's ``softmax(advantages, dim=0)`` runs over its
per-device batch (``softmax_scope="batch"``); ``"group"`` takes it within each group and averages the
groups. The two agree when the batch is one group. No ratio, no clip, no KL; mu iterations with fresh
masks and no importance correction.

Deviations from the reference code:

1. advantages are r - mean_group(r) (no std division), as in the reference code;
2. masks come from an explicit generator per (update, iteration, micro-batch);
3. ``mu`` is 12 on every task; the reference's Sudoku script uses 8 (``--set mu=8`` reproduces it);
4. the batch of the softmax is this rank's rollout batch (``prompts_per_update`` x G rows, whatever
   ``micro_batch`` is); the reference's is its per-device batch, whose size its scripts set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import mask_generator, one_step_logps
from lfpo_bench.method import Method, group_view, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class WD1Config:
    p_mask_prompt: float = 0.15  # probability of masking each prompt token in the proxy pass
    mu: int = 12  # inner iterations per rollout batch
    temperature: float = 0.9  # rollout temperature
    remasking: str = "low_confidence"  # rollout remasking
    softmax_scope: str = "batch"  # "batch": weights over this rank's whole rollout batch (the reference) | "group": within each group
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no; method.scored_tokens)

    def __post_init__(self):
        if self.softmax_scope not in ("batch", "group"):
            raise ValueError(f"wd1.softmax_scope must be 'batch' or 'group', got {self.softmax_scope!r}")


def wd1_coefficients(adv: torch.Tensor, G: int, scope: str = "group") -> torch.Tensor:
    """Per-sample loss coefficients, scaled so that the loss is the mean over samples of c_i l_i.

    ``"group"``: c_i = G (w-_i - w+_i) with w+- = softmax(+-A) within each group (the loss is the mean over
    groups of sum_i (w-_i - w+_i) l_i); ``"batch"``: c_i = N (w-_i - w+_i) with the softmax over all N
    samples (the loss is sum_i (w-_i - w+_i) l_i over the batch)."""
    if scope == "batch":
        return adv.numel() * (torch.softmax(-adv.float(), 0) - torch.softmax(adv.float(), 0))
    a = group_view(adv, G)
    return G * (torch.softmax(-a, 1) - torch.softmax(a, 1)).reshape(-1)


@METHODS.register("wd1")
class WD1(Method):
    """wd1: softmax-weighted positive/negative log-likelihood proxy, no ratio or KL."""

    Config = WD1Config

    def on_batch(self, batch) -> None:
        batch.extras["wd1_c"] = wd1_coefficients(batch.advantages, batch.group_size, self.cfg.softmax_scope)

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = one_step_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mask_id=mb.mask_id,
                            p_mask_prompt=self.cfg.p_mask_prompt, gen=mask_generator(ctx.mask_seed(it, m)))
        ell = (lp * scored_tokens(mb, self.cfg.count_padding)).sum(1)  # [N] summed proxy log-likelihood
        c = mb.extras["wd1_c"].to(lp.device)
        # c is scaled so that the trainer's row-weighted mean over micro-batches is the objective
        loss = (c * ell).mean()
        return LossOut(loss, {"ell_mean": float_(ell.mean())})
