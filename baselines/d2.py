"""d2 with StepMerge (Wang et al., "d2: Improved Techniques for Training Reasoning Diffusion Language
Models", arXiv 2509.21474; code: kuleshov-group/d2, ``diffu-grpo/``, trainer ``d2-StepMerge``).

A GRPO-style policy gradient on the likelihood of the *decoding trajectory*. The rollout's T steps are cut
into N segments starting at s_j = int(j T / N); token o_i committed in segment j(i) is scored from the state at
the segment's start (tokens committed before s_j clean, the rest masked; the prompt masked w.p. p):

    log pi(o_i) ~= log p_theta(o_i | prompt_masked, x_{s_j(i)})          (likelihood.step_merge_logps)
    A_g = r_g - mean_group(r)                                            (no std division)
    L = sum_{g,i} [ -min(rho A_g, clip(rho, 1-eps, 1+eps) A_g) + beta k3(log pi, log pi_ref) ] / #tokens

with rho = exp(log pi - log pi_old) per token, the sum over the completion up to and including the first EOS,
divided by that token count over the micro-batch. N = T is the exact trajectory likelihood under random
remasking (TraceRL's replay at ``shrink=1``); N = 1 is d1's one-step proxy with the completion fully masked.

Defaults of the reference scripts (``bash_scripts/*_d2stepmerge*.sh`` over ``train.yaml``): N = 8 (GSM8K,
Sudoku), 16 (Countdown, MATH500); mu (num_iterations) = 12 (GSM8K, MATH500), 8 (Countdown, Sudoku); eps =
0.5; beta = 0.04 against the base model (LoRA disabled); p_mask_prompt = 0.15 with a fresh mask seed per
inner iteration; G = 6; lr 3e-6, constant with warm-up, weight decay 0.1, grad clip 0.2, AdamW beta2 0.99;
LoRA r = 128, alpha = 64, dropout 0.05, 4-bit base; rollouts at temperature 0.9 (0.3 on Sudoku) with
low-confidence remasking, L = 256 / 128 (Sudoku, Countdown) / 512 (MATH500), steps L / 2, block 32.

Deviations from the reference code:

1. N is capped at the rollout's steps (the harness's tiny tasks roll out in 4 or 8 steps, below the
   scripts' N = 16); the cap is logged as ``m/segments``. At N = steps every step is its own forward;
2. the loss of each segment is one chunk of the backward pass (``chunks``), as the reference takes one
   segment per backward, but the segments of one inner iteration are accumulated into one optimiser step
   (the reference's gradient accumulation spans its N segments and 2 prompt batches the same way);
3. masks come from an explicit generator per (update, iteration, micro-batch), never a global seed;
4. the reference syncs its reference model every 64 steps (``sync_ref_model``); the harness keeps the
   reference policy fixed at the starting weights, as for diffu-GRPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import mask_generator, step_merge_bounds, step_merge_logps, step_merge_segment
from lfpo_bench.method import Method, kl_k3, ppo_clip, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class D2Config:
    n_merged: int = 8  # N: segments of the rollout's steps, one forward each (capped at the rollout's steps)
    eps: float = 0.5  # PPO clip range
    kl_beta: float = 0.04  # weight of the k3 KL to the reference (starting) policy
    p_mask_prompt: float = 0.15  # probability of masking each prompt token (one draw per inner iteration)
    mu: int = 12  # inner iterations per rollout batch (the scripts' num_iterations)
    temperature: float = 0.9  # rollout temperature (under train.rollout.decoding=method)
    remasking: str = "low_confidence"  # rollout remasking (under train.rollout.decoding=method)
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no)

    def __post_init__(self):
        if self.n_merged < 1:
            raise ValueError(f"d2.n_merged must be >= 1, got {self.n_merged}")


@METHODS.register("d2")
class D2(Method):
    """d2 StepMerge: PPO on the segment-merged trajectory likelihood, k3 KL to the reference."""

    Config = D2Config

    # the scripts per dataset; GSM8K's are the config defaults. MATH500's N = 16 is not a family default (GSM8K
    # shares the "math" family with N = 8): its preset sets it.
    defaults_by_family = {"countdown": {"mu": 8, "n_merged": 16}, "sudoku": {"mu": 8, "temperature": 0.3}}

    def segments(self, steps: int) -> int:
        return max(1, min(self.cfg.n_merged, steps))

    def chunks(self, mb) -> int:
        return self.segments(mb.steps)

    def _logps(self, ctx, mb, it, m, only=None):
        return step_merge_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.commit_step,
                                mask_id=mb.mask_id, bounds=step_merge_bounds(mb.steps, self.segments(mb.steps)),
                                p_mask_prompt=self.cfg.p_mask_prompt, gen=mask_generator(ctx.mask_seed(it, m)), only=only)

    def prepare(self, ctx, mb, m):
        return self.old_and_ref(ctx, self._logps, mb, m)

    def loss(self, ctx, mb, state, it, m, chunk=0):
        lp = self._logps(ctx, mb, it, m, only=chunk)  # [N, L], segment `chunk` only
        seg = step_merge_segment(mb.commit_step, step_merge_bounds(mb.steps, self.segments(mb.steps))).to(lp.device)
        cm = scored_tokens(mb, self.cfg.count_padding)
        here = cm * (seg == chunk).to(cm.dtype)  # this segment's scored tokens
        old = torch.where(seg == chunk, state["old"][it].to(lp.device), lp.detach())
        pg, clipped = ppo_clip(lp, old, mb.advantages.to(lp.device)[:, None], self.cfg.eps)
        kl = torch.zeros_like(lp)
        if self.uses_ref:
            kl = kl_k3(lp, torch.where(seg == chunk, state["ref"][it].to(lp.device), lp.detach()))
        total = cm.sum().clamp(min=1)  # every segment's tokens: the chunks sum to the token mean
        loss = ((pg + self.cfg.kl_beta * kl) * here).sum() / total
        k = self.segments(mb.steps)  # the trainer averages a chunk's metrics over the k chunks: report k x its part
        return LossOut(loss, {"kl": k * float_((kl * here).sum() / total), "clip_frac": k * float_((clipped * here).sum() / total),
                              "segments": float(k)})
