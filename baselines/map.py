"""Mask-Aware Policy Gradients (MAP; arXiv 2607.15200, COLM 2026; code: Haran71/mask-aware-policy-gradients,
``map/trainer.py``, ``map/position_likelihood.py``, ``map/policy_losses.py``, ``map/configs/*.yaml``).

Each decoding step is two actions: which positions to unmask and which tokens to put there. On top of a
StepMerge token likelihood (d2) MAP adds a *position* policy and its own loss. With the rollout's T steps in N
blocks of b = T / N steps (block n: tokens unmasked at steps in (n b, (n+1) b]; ``likelihood.map_bounds``),
the forward pass of block n on the state after step n b gives, for each token i it unmasked,

    token:     log pi(o_i)   = log p_theta(o_i | x_{n b})                           (likelihood.step_merge_logps)
    position:  log pi_pos(i) = c_i / tau - logsumexp({c_i / tau} + {a_j / tau : j in C(i)})   (softmax)
                             = sum_{j in C(i)} log sigmoid((c_i - a_j) / tau)                 (bradley_terry)

with c_i the token's own logit (confidence source "gt") and a_j each competitor's max logit; C(i) are the
positions unmasked in later blocks (scope "segment"; scope "position" adds those of its own block unmasked
at a later step). Each inner iteration draws K of the N blocks (among those holding a scored token) and
scores only their tokens (the sample mask S). Advantages are leave-one-out (RLOO). Both log-likelihoods
get a GSPO loss with a sequence ratio over the sampled tokens:

    rho_g = exp( sum_{i in S_g} (log pi - log pi_old)_i / |S_g| ),
    L_GSPO = -mean_g min(rho_g A_g, clip(rho_g, 1 - eps_low, 1 + eps_high) A_g)
    L = L_GSPO(token) + lambda L_GSPO(position) (+ beta KL, off by default)

Defaults of the reference recipe (``map/configs/gsm8k.yaml``, the only full recipe released with the code;
``math.yaml`` is the same apart from the data): N = 32 blocks, K = 12 sampled per iteration, loss GSPO with
eps_low = 3e-4, eps_high = 4e-4 for both terms, token-level averaging setting (unused by GSPO), position
method softmax, scope segment, confidence max_logit, source gt, tau = 1, lambda = 1; RLOO advantages;
beta = 0 (no reference model); mu (num_iterations) = 12; G = 4; rollouts at temperature 0.9, low-confidence
remasking, L = 256, 128 steps, block 32; p_mask_prompt 0.15 (unused by the StepMerge path: its prompt is
never masked); lr 3e-6, constant with warm-up, weight decay 0.1, grad clip 0.2, AdamW beta2 0.99; LoRA r = 128,
alpha = 64, dropout 0.05, 4-bit base.

Deviations from the reference code:

1. N is capped at the rollout's steps and lowered to the largest divisor of the steps at or below it (the
   tiny tasks roll out in 4 or 8 steps; the reference requires N to divide T and errors otherwise); the
   value used is logged as ``m/blocks``. K is capped at N;
2. the blocks of an inner iteration are drawn from a generator seeded per (update, iteration, micro-batch),
   not from ``global_step * mu + iteration``; the valid blocks are those with a scored token in the
   micro-batch (the reference: in its batch, which is one prompt's G completions);
3. losses: ``gspo``, ``grpo`` (token clip), ``dapo`` (asymmetric token clip) and ``reinforce``; the
   reference's ``gspo_token`` and ``position_mask_token_clipped`` are not carried;
4. like the reference, tokens unmasked at the first step are in no block and count in no loss; with
   N = T every other token is read from the exact state it was unmasked from (the exact replay of d2/TraceRL
   minus the first step);
5. ``padding_competes`` (default true, as the reference) lets the positions after the first EOS compete in
   the position policy; they did compete in the sampler, but it means the gradient reads their logits even
   with ``count_padding=false``. Set it false to keep the padding out of the gradient entirely;
6. rollout position noise (``decouple_position_token_sampling``, ``stochastic_position_selection``) is the
   shared sampler's business and off, as in the reference recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import (
    PositionRule,
    map_bounds,
    mask_generator,
    step_merge_logps,
    step_merge_segment,
)
from lfpo_bench.method import Method, kl_k3, masked_mean, rloo, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_

LOSSES = ("gspo", "grpo", "dapo", "reinforce")


@dataclass(frozen=True)
class MAPConfig:
    n_blocks: int = 32  # N: StepMerge blocks of T / N steps (lowered to a divisor of the rollout's steps)
    k_blocks: int = 12  # K: blocks scored per inner iteration (0: all)
    loss: str = "gspo"  # token loss: gspo | grpo | dapo | reinforce
    eps: float = 0.2  # grpo's symmetric clip
    eps_low: float = 3e-4  # gspo/dapo lower clip (1 - eps_low)
    eps_high: float = 4e-4  # gspo/dapo upper clip (1 + eps_high)
    position_loss: str = "gspo"  # position loss: gspo | grpo | dapo | reinforce
    position_eps: float = 0.2  # grpo clip of the position loss
    position_eps_low: float = 3e-4  # gspo/dapo lower clip of the position loss
    position_eps_high: float = 4e-4  # gspo/dapo upper clip of the position loss
    lambda_pos: float = 1.0  # weight of the position loss (0: d2-style token loss only)
    position_method: str = "softmax"  # softmax | bradley_terry
    position_scope: str = "segment"  # segment (later blocks compete) | position (also later steps of its own block)
    position_confidence: str = "max_logit"  # competitors' score: max_logit | top_prob | neg_entropy | margin
    position_source: str = "gt"  # the token's own score: gt (its token's logit/prob) | max (as competitors)
    tau: float = 1.0  # temperature of the position scores
    kl_beta: float = 0.0  # k3 KL to the reference (starting) policy on the token log-probs (reference: 0)
    mu: int = 12  # inner iterations per rollout batch
    temperature: float = 0.9  # rollout temperature (under train.rollout.decoding=method)
    remasking: str = "low_confidence"  # rollout remasking (under train.rollout.decoding=method)
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no)
    padding_competes: bool = True  # positions after the first EOS compete in the position policy (the reference: yes)

    def __post_init__(self):
        for name in ("loss", "position_loss"):
            if getattr(self, name) not in LOSSES:
                raise ValueError(f"map.{name} must be one of {', '.join(LOSSES)}, got {getattr(self, name)!r}")
        if self.n_blocks < 1 or self.k_blocks < 0:
            raise ValueError("map.n_blocks must be >= 1 and map.k_blocks >= 0 (0: every block)")
        self.rule()  # the position settings are checked here, with their own messages

    def rule(self) -> PositionRule:
        return PositionRule(self.position_method, self.position_scope, self.position_confidence, self.position_source, self.tau)


def pg_loss(kind: str, lp, old, adv, tokens, eps: float, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clipped [N] or [N, L] as float) of one log-likelihood over ``tokens`` [N, L] (0/1). gspo: the
    sequence ratio exp(mean_tokens(lp - old)), clipped to [1 - eps_low, 1 + eps_high], mean over sequences;
    grpo/dapo: token ratios clipped to [1 - eps, 1 + eps] / [1 - eps_low, 1 + eps_high], token mean;
    reinforce: -A lp, token mean."""
    A = adv[:, None]
    t = tokens.to(lp.dtype)
    if kind == "gspo":
        ratio = torch.exp(((lp - old) * t).sum(1) / t.sum(1).clamp(min=1))  # [N]
        clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
        loss = -torch.min(ratio * adv, clipped * adv).mean()
        return loss, (ratio != clipped).float()
    if kind == "reinforce":
        return (-(A * lp) * t).sum() / t.sum().clamp(min=1), torch.zeros_like(lp)
    lo, hi = (eps, eps) if kind == "grpo" else (eps_low, eps_high)
    ratio = torch.exp(lp - old)
    clipped = ratio.clamp(1 - lo, 1 + hi)
    per_tok = -torch.min(ratio * A, clipped * A) * t
    return per_tok.sum() / t.sum().clamp(min=1), ((ratio < 1 - lo) | (ratio > 1 + hi)).float()


@METHODS.register("map")
class MAP(Method):
    """Mask-Aware Policy Gradients: StepMerge token and position policies, each with a GSPO loss."""

    Config = MAPConfig

    def advantages(self, rewards, G):
        return rloo(rewards, G)

    def blocks(self, steps: int) -> int:
        """N at a rollout of ``steps`` steps: the largest divisor of ``steps`` not above n_blocks (deviation 1)."""
        n = min(self.cfg.n_blocks, steps)
        while steps % n:
            n -= 1
        return n

    def bounds(self, mb) -> list[int]:
        return map_bounds(mb.steps, self.blocks(mb.steps))

    def sampled(self, ctx, mb, it: int, m: int) -> list[int]:
        """The K blocks scored at inner iteration ``it``: drawn among blocks holding a scored token."""
        bounds = self.bounds(mb)
        seg = step_merge_segment(mb.commit_step, bounds)
        cm = scored_tokens(mb, self.cfg.count_padding).bool().to(seg.device)
        valid = sorted({int(j) for j in seg[cm & (seg >= 0)].unique().tolist()})
        K = self.cfg.k_blocks
        if not valid:  # nothing scored in this micro-batch: any K blocks (their tokens count nowhere), as the reference
            return list(range(len(bounds)))[: K or len(bounds)]
        if K == 0 or len(valid) <= K:
            return valid
        perm = torch.randperm(len(valid), generator=mask_generator(ctx.mask_seed(it, m)))
        return sorted(valid[int(i)] for i in perm[:K])

    def _logps(self, ctx, mb, only=None):
        competes = None if self.cfg.padding_competes else scored_tokens(mb, False).bool()
        return step_merge_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.commit_step,
                                mask_id=mb.mask_id, bounds=self.bounds(mb), only=only, position=self.cfg.rule(),
                                competes=competes)

    def prepare(self, ctx, mb, m):
        with torch.no_grad():  # every block once: the old policy's log-probs do not depend on the iteration
            old, old_pos = self._logps(ctx, mb)
            ref = None
            if self.uses_ref:
                with ctx.use("ref"):
                    ref, _ = self._logps(ctx, mb)
        return {"old": old, "old_pos": old_pos, "ref": ref}

    def loss(self, ctx, mb, state, it, m, chunk=0):
        blocks = self.sampled(ctx, mb, it, m)
        lp, pos = self._logps(ctx, mb, only=blocks)
        seg = step_merge_segment(mb.commit_step, self.bounds(mb)).to(lp.device)
        picked = torch.zeros_like(seg, dtype=torch.bool)
        for j in blocks:
            picked |= seg == j
        tokens = scored_tokens(mb, self.cfg.count_padding).to(lp.device)  # [N, L]
        if self.cfg.k_blocks:  # the sampled blocks' tokens; with K = 0 every completion token counts, the first
            tokens = tokens * picked.to(lp.dtype)  # step's too (log-prob 0 under both policies), as the reference does
        adv = mb.advantages.to(lp.device)
        c = self.cfg
        tok_loss, tok_clip = pg_loss(c.loss, lp, state["old"].to(lp.device), adv, tokens, c.eps, c.eps_low, c.eps_high)
        loss, metrics = tok_loss, {"token_loss": float_(tok_loss), "blocks": float(self.blocks(mb.steps)),
                                   "sampled_blocks": float(len(blocks))}
        if c.lambda_pos:
            pos_loss, _ = pg_loss(c.position_loss, pos, state["old_pos"].to(lp.device), adv, tokens, c.position_eps,
                                  c.position_eps_low, c.position_eps_high)
            loss = loss + c.lambda_pos * pos_loss
            metrics["position_loss"] = float_(pos_loss)
            metrics["position_logp"] = float_(masked_mean(pos, tokens))
        if self.uses_ref:
            kl = kl_k3(lp, state["ref"].to(lp.device))
            loss = loss + c.kl_beta * masked_mean(kl, tokens)
            metrics["kl"] = float_(masked_mean(kl, tokens))
        metrics["clip_frac"] = float_(tok_clip.mean())
        return LossOut(loss, metrics)
