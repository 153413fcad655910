"""LFPO: Likelihood-Free Policy Optimization for masked diffusion models (Wei et al., arXiv 2603.01563).

THIS IS A RECONSTRUCTION. Only the paper's abstract, the opening of its introduction and third-party
summaries were available; the code (github.com/kithib/LFPO) was not reachable. What the sources state:
LFPO contrasts the denoising logits of high- and low-reward trajectories ("geometric velocity
rectification" via contrastive updates, no likelihood estimate), trains intermediate steps to predict the
final answer, samples representative timesteps by stratified trajectory sampling, accumulates gradients
block-wise, and updates the reference (rollout) policy by EMA. For a masked diffusion model the token
velocity is an affine function of softmax(denoising logits), so rectifying the velocity means moving the
denoising distribution; we follow the DiffusionNFT template (arXiv 2509.16117) for the contrast.

Every choice below was guessed and is a ``Config`` field, so a user with the paper can set it:

1. rollouts come from pi_old, an EMA of the policy (``ema``; ``ema=0`` refreshes it every step);
   rollout temperature and remasking (``temperature``, ``remasking``);
2. rewards to weights: A = R - mean_group(R) (/ std if ``scale_std``); ``weighting="linear"``:
   r = clip(A / A_max, -1, 1) / 2 + 1/2 (``a_max``); ``"binary"``: r = 1[R > mean_group(R)];
   groups with equal rewards are skipped (``skip_zero_signal``) and counted;
3. stratified trajectory sampling: K strata (``k``) of the trajectory's denoising steps, one step drawn
   uniformly from each; ``states="trajectory"`` uses the trajectory's own intermediate state there,
   ``"remask"`` re-masks the final answer at K stratified mask ratios;
4. contrastive rectification at each state with z = logits_theta, z_old = logits_old (no grad):
   z_pos = beta z + (1 - beta) z_old, z_neg = (1 + beta) z_old - beta z (``beta``; ``mix="logit"``, or
   ``"prob"``: the same mixture of probabilities, clamped at 1e-6 and renormalised); target y = the
   trajectory's FINAL token at each still-masked position;
   L = mean over (trajectory, state) of the mean over masked i of r CE(y_i, z_pos) + (1-r) CE(y_i, z_neg)
   (``token_mean="per_state"``; ``"global"`` averages over all masked tokens of the micro-batch at once);
5. optional consistency term ``lambda_cons`` * CE(y, z) on positive trajectories (A > 0) only;
6. optional per-token KL(p_theta || p_ref) at the sampled states, weight ``kl_beta``;
7. block-wise gradient accumulation: one backward per stratum (``chunks``), so memory stays at one
   forward pass per micro-batch;
8. after each optimiser step, theta_old <- ema theta_old + (1 - ema) theta;
9. which positions count (``count_padding``): by default the masked positions up to and including the
   first EOS, as every likelihood baseline here scores its tokens (``method.scored_tokens``); ``True`` also
   counts the EOS padding after the answer, which lets a failed sample's negative term push p(EOS) down
   where the answer has already ended.

With z_old == z (at the start, or ema=0 before the first step) the gradient is
beta (2r - 1) grad CE(y, z) = beta clip(A / A_max) grad CE(y, z): a reward-weighted pull towards (A > 0)
or push away from (A < 0) the final answer, with no log-likelihood of a sequence, no ELBO, no ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .likelihood import completion_logits, mask_generator
from .method import Method, group_center, group_view, scored_tokens, zero_signal_groups
from .registry import METHODS
from .sampler import state_at
from .types import LossOut, RolloutBatch


@dataclass(frozen=True)
class LFPOConfig:
    beta: float = 1.0  # mixing strength of the implicit positive/negative policies
    k: int = 4  # strata per trajectory (sampled states)
    ema: float = 0.9  # EMA rate of the old/rollout policy (0 = refresh every step)
    a_max: float = 1.0  # advantage scale for the linear optimality weight
    weighting: str = "linear"  # "linear" | "binary"
    scale_std: bool = False  # divide advantages by the group std
    skip_zero_signal: bool = True  # drop groups whose rewards are all equal
    states: str = "trajectory"  # "trajectory" (own intermediate states) | "remask" (forward-process re-masking)
    mix: str = "logit"  # "logit" | "prob": where the two policies are mixed
    token_mean: str = "per_state"  # "per_state" | "global": how masked-token CEs are averaged
    lambda_cons: float = 0.0  # weight of CE(y, z_theta) on positive trajectories
    kl_beta: float = 0.0  # weight of per-token KL to the frozen reference at the sampled states
    mu: int = 1  # optimiser steps per rollout batch
    temperature: float = 1.0  # rollout temperature
    remasking: str = "random"  # rollout remasking: "random" | "low_confidence"
    count_padding: bool = False  # guessed: count masked positions after the first EOS (padding) too; False scores the answer only, as the likelihood baselines do

    def __post_init__(self):
        for name, val, ok in [("weighting", self.weighting, ("linear", "binary")), ("states", self.states, ("trajectory", "remask")),
                              ("mix", self.mix, ("logit", "prob")), ("token_mean", self.token_mean, ("per_state", "global"))]:
            if val not in ok:
                raise ValueError(f"lfpo.{name} must be one of {ok}, got {val!r}")
        if self.k < 1 or not 0.0 <= self.ema < 1.0 or self.a_max <= 0:
            raise ValueError("lfpo needs k >= 1, 0 <= ema < 1, a_max > 0")


def optimality_weight(rewards: torch.Tensor, G: int, cfg: LFPOConfig) -> torch.Tensor:
    """r in [0, 1] per sample (spec item 2)."""
    if cfg.weighting == "binary":
        g = group_view(rewards.float(), G)
        return (g > g.mean(1, keepdim=True)).float().reshape(-1)
    a = group_center(rewards, G, scale_std=cfg.scale_std)
    return (a / cfg.a_max).clamp(-1, 1) / 2 + 0.5


def stratified_uniform(N: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """One uniform draw from each of K equal strata of [0, 1), per row: [N, K], increasing along K."""
    return (torch.arange(K)[None, :] + torch.rand(N, K, generator=gen)) / K


def stratified_steps(n_steps: int, N: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """One step drawn uniformly from each of K equal strata of [0, n_steps): [N, K] int64.

    With fewer steps than strata, strata collapse onto the available steps."""
    return (stratified_uniform(N, K, gen) * n_steps).floor().long().clamp(max=int(n_steps) - 1)


def contrastive_ce(z: torch.Tensor, z_old: torch.Tensor, y: torch.Tensor, beta: float, mix: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(y, pos) and CE(y, neg) per position for the implicit policies (spec item 4): [...], [...]."""
    if mix == "logit":
        z_pos = beta * z + (1 - beta) * z_old
        z_neg = (1 + beta) * z_old - beta * z
        lp_pos = torch.log_softmax(z_pos.float(), -1)
        lp_neg = torch.log_softmax(z_neg.float(), -1)
    else:
        p, p_old = torch.softmax(z.float(), -1), torch.softmax(z_old.float(), -1)
        pos = (beta * p + (1 - beta) * p_old).clamp(min=1e-6)
        neg = ((1 + beta) * p_old - beta * p).clamp(min=1e-6)
        lp_pos = torch.log(pos / pos.sum(-1, keepdim=True))
        lp_neg = torch.log(neg / neg.sum(-1, keepdim=True))
    ce_pos = -torch.gather(lp_pos, -1, y[..., None]).squeeze(-1)
    ce_neg = -torch.gather(lp_neg, -1, y[..., None]).squeeze(-1)
    return ce_pos, ce_neg


@METHODS.register("lfpo")
class LFPO(Method):
    """LFPO (reconstruction): contrastive rectification of denoising logits, no likelihood estimate."""

    Config = LFPOConfig
    rollout_policy = "old"
    uses_old = True

    def advantages(self, rewards, G):
        return group_center(rewards, G, scale_std=self.cfg.scale_std)

    def keep_groups(self, rewards, G):
        if not self.cfg.skip_zero_signal:
            return super().keep_groups(rewards, G)
        return ~zero_signal_groups(rewards, G)

    def on_batch(self, batch: RolloutBatch) -> None:
        batch.extras["r"] = optimality_weight(batch.rewards, batch.group_size, self.cfg)

    def chunks(self, mb: RolloutBatch) -> int:
        return self.cfg.k

    def prepare(self, ctx, mb: RolloutBatch, m: int) -> dict:
        """Pick the K states of every trajectory (stratified), as completion inputs [K][N, L]."""
        N, L = mb.completion_ids.shape
        gen = mask_generator(ctx.mask_seed(0, m))
        K = self.cfg.k
        if self.cfg.states == "trajectory":
            steps = stratified_steps(mb.steps, N, K, gen).to(mb.completion_ids.device)
            states = [state_at(mb.completion_ids, mb.commit_step, steps[:, j], mb.mask_id) for j in range(K)]
        else:  # forward-process re-masking at stratified ratios t in each of K strata of (0, 1]
            t = 1 - stratified_uniform(N, K, gen)  # mask ratios in (0, 1], [N, K]
            states = []
            for j in range(K):
                drop = torch.rand(N, L, generator=gen) < t[:, j : j + 1]
                states.append(torch.where(drop.to(mb.completion_ids.device), torch.full_like(mb.completion_ids, mb.mask_id), mb.completion_ids))
        return {"states": states}

    def loss(self, ctx, mb: RolloutBatch, state: dict, it: int, m: int, chunk: int = 0) -> LossOut:
        cfg = self.cfg
        x_t = state["states"][chunk]  # [N, L]
        y = mb.completion_ids  # final tokens
        masked = (x_t == mb.mask_id) & scored_tokens(mb, cfg.count_padding).bool()  # M_t, on the scored positions
        with torch.no_grad(), ctx.use("old"):
            z_old = completion_logits(ctx.policy, mb.prompt_ids, mb.prompt_mask, x_t)  # [N, L, V]
        ref = None
        if cfg.kl_beta > 0:
            with torch.no_grad(), ctx.use("ref"):
                ref = completion_logits(ctx.policy, mb.prompt_ids, mb.prompt_mask, x_t)
        z = completion_logits(ctx.policy, mb.prompt_ids, mb.prompt_mask, x_t)  # [N, L, V]
        r = mb.extras["r"].to(z.device)[:, None]  # [N, 1]
        ce_pos, ce_neg = contrastive_ce(z, z_old, y, cfg.beta, cfg.mix)  # [N, L]
        per_tok = r * ce_pos + (1 - r) * ce_neg
        if cfg.lambda_cons > 0:
            positive = (mb.advantages > 0).to(z.device)[:, None]
            per_tok = per_tok + cfg.lambda_cons * positive * F.cross_entropy(z.transpose(1, 2).float(), y, reduction="none")
        kl = torch.zeros((), device=z.device)
        if ref is not None:
            lp, lp_ref = torch.log_softmax(z.float(), -1), torch.log_softmax(ref.float(), -1)
            kl_tok = (lp.exp() * (lp - lp_ref)).sum(-1)  # [N, L]
            per_tok = per_tok + cfg.kl_beta * kl_tok
            kl = (kl_tok * masked).sum() / masked.sum().clamp(min=1)
        mf = masked.float()
        if cfg.token_mean == "per_state":
            has = mf.sum(1) > 0
            per_state = (per_tok * mf).sum(1) / mf.sum(1).clamp(min=1)
            loss = per_state[has].sum() / has.sum().clamp(min=1)
        else:
            loss = (per_tok * mf).sum() / mf.sum().clamp(min=1)
        with torch.no_grad():
            denom = mf.sum().clamp(min=1)
            metrics = {"ce_pos": (ce_pos * mf).sum() / denom, "ce_neg": (ce_neg * mf).sum() / denom, "masked_frac": mf.mean(),
                       "agree_final": ((z.argmax(-1) == y).float() * mf).sum() / denom, "kl": kl, "r_mean": r.mean()}
        return LossOut(loss / cfg.k, {k: float(v) for k, v in metrics.items()})

    def after_step(self, ctx) -> None:
        ctx.ema_update(self.cfg.ema)
