"""Shared likelihood estimators for masked diffusion LMs, as pure functions.

Each takes the policy (``DiffusionLM`` or any ``(ids, attention_mask) -> logits`` callable), prompt ids and
mask, completion ids and completion mask, and an explicit ``torch.Generator`` for its masks. The same
masks reach the current, old and reference passes when the caller builds each pass's generator from the
same seed (``mask_generator``); nothing here touches the global RNG.

Estimators:

- ``one_step_logps``: diffu-GRPO / wd1 (d1): completion fully masked, prompt tokens masked w.p. p.
- ``coupled_logps``: coupled-GRPO (DiffuCoder): a fully masked pass plus two complementary masks.
- ``spg_bounds``: SPG's block-wise ELBO and EUBO.
- ``espo_elbo``: ESPO's sequence ELBO with stratified mask counts and a complementary pass.
- ``trajectory_logps``: TraceRL replay of the sampler's commit record; with random remasking, temperature
  1 and ``shrink=1`` it is the exact log-probability of the sampled trajectory up to the theta-free term
  of the random position choice.
- ``step_merge_logps``: StepMerge, d2's (the same replay with the rollout's steps cut into N segments at
  ``int(j * steps / N)``, the prompt masked as d1 does; with N = steps and no prompt masking it equals
  ``trajectory_logps`` at ``shrink=1``) and MAP's (blocks of T // N steps, ``map_bounds``);
- ``position_logps``: MAP's position log-probability (a softmax or Bradley-Terry policy over the positions
  still masked, scored by the model's confidence), from the same forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sampler import state_at


def mask_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator for one set of masks; build one per pass from the same seed to share masks.
    Draws happen on the CPU and move to the model's device, so masks are identical on CPU and GPU."""
    return torch.Generator().manual_seed(int(seed) % (2**63))


def _rand(shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(device)


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets]: [N, L, V], [N, L] -> [N, L] float32."""
    N, L, V = logits.shape
    return -F.cross_entropy(logits.reshape(N * L, V).float(), targets.reshape(N * L), reduction="none").view(N, L)


def completion_logits(policy, prompt_ids, prompt_mask, completion_in) -> torch.Tensor:
    """Logits at the completion positions for input ``prompt ++ completion_in``: [N, L, V] (the LM head runs
    on the completion positions only when the model supports it)."""
    from .sampler import block_logits

    x = torch.cat([prompt_ids, completion_in], 1)
    am = torch.cat([prompt_mask, torch.ones_like(completion_in)], 1)
    return block_logits(policy, x, am, prompt_ids.shape[1], x.shape[1])


def _masked(t: torch.Tensor, where: torch.Tensor, mask_id: int) -> torch.Tensor:
    return torch.where(where, torch.full_like(t, mask_id), t)


def one_step_logps(policy, prompt_ids, prompt_mask, completion, *, mask_id: int, p_mask_prompt: float,
                   gen: torch.Generator) -> torch.Tensor:
    """d1's per-token proxy: log p(o_j | prompt with tokens masked w.p. ``p_mask_prompt``, completion all
    masked). Returns [N, L]."""
    drop = _rand(prompt_ids.shape, gen, prompt_ids.device) < p_mask_prompt
    prompt_in = _masked(prompt_ids, drop & prompt_mask.bool(), mask_id)
    comp_in = torch.full_like(completion, mask_id)
    return token_logps(completion_logits(policy, prompt_in, prompt_mask, comp_in), completion)


def coupled_logps(policy, prompt_ids, prompt_mask, completion, *, mask_id: int, gen: torch.Generator,
                  t_low: float = 0.2, t_high: float = 0.8) -> torch.Tensor:
    """coupled-GRPO per-token log-prob: 1/2 [logp^(0) + (logp^(1)/t if masked in (1) else logp^(2)/(1-t))].

    t ~ U(t_low, t_high) and R ~ U(0,1)^L per sample; pass (0) masks the whole completion, (1) masks R < t,
    (2) masks the complement R >= t; the prompt is never masked. Three passes in one batch. [N, L]."""
    N, L = completion.shape
    dev = completion.device
    t = t_low + (t_high - t_low) * _rand((N, 1), gen, dev)
    R = _rand((N, L), gen, dev)
    m1 = R < t
    ins = torch.cat([torch.full_like(completion, mask_id), _masked(completion, m1, mask_id), _masked(completion, ~m1, mask_id)])
    lp = token_logps(completion_logits(policy, prompt_ids.repeat(3, 1), prompt_mask.repeat(3, 1), ins), completion.repeat(3, 1))
    lp0, lp1, lp2 = lp[:N], lp[N : 2 * N], lp[2 * N :]
    return 0.5 * (lp0 + torch.where(m1, lp1 / t, lp2 / (1 - t)))


def spg_masks(completion_mask: torch.Tensor, prompt_mask: torch.Tensor, *, block: int, p_other: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One SPG block-wise mask per sample: (prompt_masked [N, P], completion_masked [N, L]) bools.

    A random block b among those the completion (up to EOS) occupies: earlier blocks clean, a uniform
    count 1..n_b of block b's tokens masked at random positions, later blocks and positions after the EOS
    fully masked; other clean tokens, prompt included, masked with probability ``p_other``."""
    N, L = completion_mask.shape
    dev = completion_mask.device
    length = completion_mask.sum(1).clamp(min=1)  # |o_i|
    n_blocks = (length + block - 1) // block
    b = (_rand((N,), gen, dev) * n_blocks).long().clamp(max=n_blocks - 1)
    pos = torch.arange(L, device=dev)[None, :]
    start, end = (b * block)[:, None], torch.minimum((b + 1) * block, length)[:, None]
    in_b = (pos >= start) & (pos < end)
    n_b = (end - start).squeeze(1)
    k = 1 + (_rand((N,), gen, dev) * n_b).long().clamp(max=n_b - 1)
    # random k positions inside block b: rank uniform keys within the block
    keys = torch.where(in_b, _rand((N, L), gen, dev), torch.full((N, L), 2.0, device=dev))
    rank = keys.argsort(1).argsort(1)
    comp_masked = (in_b & (rank < k[:, None])) | (pos >= end)
    other = _rand((N, L), gen, dev) < p_other
    comp_masked |= other & (pos < end)  # earlier blocks and block b's unmasked tokens
    prompt_masked = (_rand(prompt_mask.shape, gen, dev) < p_other) & prompt_mask.bool()
    return prompt_masked, comp_masked


def spg_bounds(policy, prompt_ids, prompt_mask, completion, completion_mask, *, mask_id: int, gen: torch.Generator,
               block: int = 32, n_masks: int = 2, p_other: float = 0.15, beta: float = 1.5
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """SPG's lower (ELBO) and upper (EUBO) bounds per sequence, each [N].

    ELBO = mean over masks of (sum over masked completion tokens of logp) / (#masked).
    EUBO = (1/beta) * mean over tokens with non-zero average of log(mean over masks of
    p^beta * 1[masked] / t_hat), t_hat = #masked / |o_i|. Only tokens up to the first EOS count."""
    cm = completion_mask.bool()
    length = cm.sum(1).clamp(min=1).float()
    elbo = torch.zeros(completion.shape[0], device=completion.device)
    acc = torch.zeros(completion.shape, device=completion.device)
    for _ in range(n_masks):
        pm, cmask = spg_masks(completion_mask, prompt_mask, block=block, p_other=p_other, gen=gen)
        lp = token_logps(completion_logits(policy, _masked(prompt_ids, pm, mask_id), prompt_mask,
                                           _masked(completion, cmask, mask_id)), completion)
        counted = cmask & cm
        n = counted.sum(1).clamp(min=1)
        elbo = elbo + (lp * counted).sum(1) / n
        t_hat = (counted.sum(1).float() / length).clamp(min=1e-6)[:, None]
        acc = acc + torch.where(counted, torch.exp(beta * lp) / t_hat, torch.zeros_like(lp))
    elbo = elbo / n_masks
    avg = acc / n_masks
    nz = (avg > 0) & cm
    log_avg = torch.where(nz, torch.log(avg.clamp(min=1e-30)), torch.zeros_like(avg))
    eubo = log_avg.sum(1) / nz.sum(1).clamp(min=1) / beta
    return elbo, eubo


def espo_elbo(policy, prompt_ids, prompt_mask, completion, *, mask_id: int, gen: torch.Generator,
              n_draws: int = 2, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """ESPO's sequence ELBO, [N]: per draw, k masked positions with k stratified across the batch and
    t = k/(L+1): sum of logp/t over them, plus the complementary pass over the other positions with
    weight 1/(1-t); the two halves are averaged, then the draws. ``tokens`` [N, L] (0/1): only these
    positions count (None: all L, the EOS padding included, as the reference does); the masks are drawn
    the same either way."""
    N, L = completion.shape
    dev = completion.device
    total = torch.zeros(N, device=dev)
    for _ in range(n_draws):
        strata = torch.randperm(N, generator=gen).to(dev).float()
        u = (strata + _rand((N,), gen, dev)) / N  # one draw per stratum of [0, 1)
        k = (u * L).floor().long().clamp(0, L - 1) + 1  # 1..L
        t = (k.float() / (L + 1))[:, None]
        rank = _rand((N, L), gen, dev).argsort(1).argsort(1)
        m = rank < k[:, None]
        ins = torch.cat([_masked(completion, m, mask_id), _masked(completion, ~m, mask_id)])
        lp = token_logps(completion_logits(policy, prompt_ids.repeat(2, 1), prompt_mask.repeat(2, 1), ins), completion.repeat(2, 1))
        if tokens is not None:
            lp = lp * tokens.to(lp.dtype).repeat(2, 1)
        main = (lp[:N] * m).sum(1) / t.squeeze(1)
        comp = (lp[N:] * ~m).sum(1) / (1 - t).squeeze(1)
        total = total + 0.5 * (main + comp)
    return total / n_draws


def trajectory_logps(policy, prompt_ids, prompt_mask, completion, commit_step, *, mask_id: int, shrink: int = 1,
                     n_steps: int | None = None) -> torch.Tensor:
    """TraceRL replay: log p(token | state at the start of its merged step), [N, L].

    Commit steps are merged in groups of ``shrink``; for merged step s the input has tokens committed
    before s*shrink clean and the rest masked, and the targets are the tokens committed inside the group.
    One forward pass per merged step that any row used; with ``n_steps`` (the rollout's pass count), one per
    merged step of ``range(n_steps)`` whether used or not, so that the number of passes does not depend on the
    data (needed when forwards are collectives). Both give the same values."""
    out = torch.zeros(completion.shape, device=completion.device)
    group = torch.div(commit_step.clamp(min=0), shrink, rounding_mode="floor")
    merged = torch.unique(group).tolist() if n_steps is None else range(-(-n_steps // shrink))
    for s in merged:
        state = state_at(completion, commit_step, s * shrink, mask_id)
        lp = token_logps(completion_logits(policy, prompt_ids, prompt_mask, state), completion)
        out = torch.where(group == s, lp, out)
    return out


def step_merge_bounds(n_steps: int, n_merged: int) -> list[int]:
    """d2's segments: their first steps, 0 and ``int(j * n_steps / N)`` for j = 1..N-1 (N <= n_steps, so the
    starts are distinct)."""
    if not 1 <= n_merged <= n_steps:
        raise ValueError(f"StepMerge needs 1 <= N <= steps, got N={n_merged} at {n_steps} steps")
    return [0] + [int(j * n_steps / n_merged) for j in range(1, n_merged)]


def map_bounds(n_steps: int, n_blocks: int) -> list[int]:
    """MAP's blocks as segment first steps: block n holds the tokens unmasked at steps in (n b, (n+1) b] with
    b = T // N, i.e. first step n b + 1. The first step's tokens (step 0) are in no block (the reference's
    convention). N must divide T."""
    if not 1 <= n_blocks <= n_steps or n_steps % n_blocks:
        raise ValueError(f"MAP's StepMerge needs N to divide the steps, got N={n_blocks} at {n_steps} steps")
    b = n_steps // n_blocks
    return [n * b + 1 for n in range(n_blocks)]


def step_merge_segment(commit_step: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """Segment of each completion position, [N, L]: the last segment whose first step is <= its commit step;
    -1 before the first segment (scored nowhere)."""
    starts = torch.tensor(bounds, device=commit_step.device)
    return (commit_step.clamp(min=0)[..., None] >= starts).sum(-1) - 1


@dataclass(frozen=True)
class PositionRule:
    """MAP's position policy: which positions a committed token competed with, and how (see position_logps)."""

    method: str = "softmax"  # "softmax" over itself and its competitors | "bradley_terry" (pairwise wins)
    scope: str = "segment"  # "segment": positions unmasked in later segments | "position": also later in its own segment
    confidence: str = "max_logit"  # competitors' score: max_logit | top_prob | neg_entropy | margin
    source: str = "gt"  # the token's own score: "gt" (its sampled token's logit or prob) | "max" (as competitors)
    tau: float = 1.0  # temperature of the scores

    def __post_init__(self):
        for name, allowed in (("method", ("softmax", "bradley_terry")), ("scope", ("segment", "position")),
                              ("confidence", ("max_logit", "top_prob", "neg_entropy", "margin")), ("source", ("gt", "max"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"position {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.source == "gt" and self.confidence not in ("max_logit", "top_prob"):
            raise ValueError("position source 'gt' scores the token by its logit or probability: use confidence max_logit "
                             "or top_prob, or source 'max'")
        if not self.tau > 0:
            raise ValueError(f"position tau must be > 0, got {self.tau}")


def _confidence(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, L, V] -> [N, L]."""
    lg = logits.float()
    if kind == "max_logit":
        return lg.max(-1).values
    p = lg.softmax(-1)
    if kind == "top_prob":
        return p.max(-1).values
    if kind == "neg_entropy":
        return (p * lg.log_softmax(-1)).sum(-1)
    top2 = p.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def position_logps(logits: torch.Tensor, completion: torch.Tensor, commit_step: torch.Tensor, in_seg: torch.Tensor,
                   next_start: int, rule: PositionRule, competes: torch.Tensor | None = None) -> torch.Tensor:
    """MAP's position log-probability of each token of one segment, [N, L] (0 elsewhere): how likely the
    policy was to unmask this position rather than its competitors, from the segment's forward ``logits``
    [N, L, V]. Competitors of token i: positions unmasked at a later segment (commit step >= ``next_start``),
    and under scope "position" those of its own segment unmasked at a later step; ``competes`` [N, L] (bool)
    restricts the competitors further (None: every position, the reference's choice). With scores c_i (the token's
    own) and a_j (competitors', ``rule.confidence``):
        softmax:        c_i / tau - logsumexp({c_i / tau} + {a_j / tau : j competes})
        bradley_terry:  sum_{j competes} log sigmoid((c_i - a_j) / tau)."""
    a = _confidence(logits, rule.confidence)  # [N, L]
    if rule.source == "max":
        c = a
    elif rule.confidence == "max_logit":
        c = logits.float().gather(-1, completion[..., None]).squeeze(-1)
    else:
        c = logits.float().softmax(-1).gather(-1, completion[..., None]).squeeze(-1)
    later = commit_step >= next_start  # [N, L]
    comp = later[:, None, :].expand(-1, completion.shape[1], -1).clone()  # [N, i, j]
    if rule.scope == "position":
        comp |= in_seg[:, None, :] & (commit_step[:, None, :] > commit_step[:, :, None])
    eye = torch.eye(completion.shape[1], dtype=torch.bool, device=completion.device)
    comp &= ~eye
    if competes is not None:
        comp &= competes.bool()[:, None, :]
    if rule.method == "bradley_terry":
        pair = F.logsigmoid((c[:, :, None] - a[:, None, :]) / rule.tau)  # [N, i, j]
        out = (pair * comp).sum(-1)
    else:
        scores = (a[:, None, :] / rule.tau).masked_fill(~comp, float("-inf"))  # [N, i, j]
        allc = torch.cat([(c / rule.tau)[..., None], scores], -1)  # [N, i, 1 + L]
        out = c / rule.tau - torch.logsumexp(allc, -1)
    return torch.where(in_seg, out, torch.zeros_like(out))


def step_merge_logps(policy, prompt_ids, prompt_mask, completion, commit_step, *, mask_id: int, bounds: list[int],
                     p_mask_prompt: float = 0.0, gen: torch.Generator | None = None, only=None,
                     position: PositionRule | None = None, competes: torch.Tensor | None = None):
    """StepMerge (d2, and MAP's token likelihood): log p(token | state at the start of its segment), [N, L].
    ``bounds``: the first commit step of each segment (d2: ``step_merge_bounds``; MAP: ``map_bounds``); token
    i with commit step s_i in [bounds[j], bounds[j+1]) is read from the completion with the tokens committed
    before bounds[j] clean and the rest masked, and the prompt with each token masked w.p. ``p_mask_prompt``
    (one draw from ``gen``, the same for every segment); tokens before bounds[0] are scored nowhere (0). One
    forward pass per segment, always, so the pass count never depends on the data; ``only`` (an index or a
    collection of them): just those segments, the rest 0. With ``position``, also MAP's position log-probs
    from the same forward passes (``competes``: see ``position_logps``): returns (token logps, position logps)."""
    seg = step_merge_segment(commit_step, bounds)  # [N, L]
    prompt_in = prompt_ids
    if p_mask_prompt > 0:
        drop = _rand(prompt_ids.shape, gen, prompt_ids.device) < p_mask_prompt
        prompt_in = _masked(prompt_ids, drop & prompt_mask.bool(), mask_id)
    keep = None if only is None else ({int(only)} if isinstance(only, int) else {int(j) for j in only})
    out = torch.zeros(completion.shape, device=completion.device)
    pos = torch.zeros(completion.shape, device=completion.device) if position is not None else None
    for j, b in enumerate(bounds):
        if keep is not None and j not in keep:
            continue
        state = state_at(completion, commit_step, b, mask_id)  # [N, L]: committed before step b clean
        logits = completion_logits(policy, prompt_in, prompt_mask, state)  # [N, L, V]
        here = seg == j
        out = torch.where(here, token_logps(logits, completion), out)
        if position is not None:
            nxt = bounds[j + 1] if j + 1 < len(bounds) else int(commit_step.max()) + 1
            pos = pos + position_logps(logits, completion, commit_step, here, nxt, position, competes)
    return out if position is None else (out, pos)


# ---- the SFT estimator (pretraining and the `sft` baseline) --------------------------------------------
def sft_batch(lm, task, examples, gen_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt ids/mask (left padded) and answer ids padded with EOS to ``gen_length``."""
    style = lm.profile.prompt_style
    pid, pmask = lm.encode_prompts([task.prompt(e, style) for e in examples], gen_length)
    eos = lm.profile.eos_ids[0]
    ans = torch.full((len(examples), gen_length), eos, dtype=torch.long)
    for i, e in enumerate(examples):
        ids = lm.tokenizer(task.sft_target(e))["input_ids"][:gen_length]
        ans[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return pid, pmask, ans


def masked_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of CE / t, divided by B * L.

    logits [B, L, V], targets [B, L], masked [B, L] bool, t [B, 1] mask ratio of each row."""
    B, L = targets.shape
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none").view(B, L)
    return (ce * masked / t).sum() / (B * L)


def sft_loss(lm, pid, pmask, ans, gen: torch.Generator, t_min: float, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA SFT loss with t ~ U(t_min, 1) per row; the prompt is never masked. ``tokens`` [B, L] (0/1): only
    these answer positions count, and the loss divides by their number instead of B * L (None: every
    position, the EOS padding included, as LLaDA's recipe does)."""
    B, L = ans.shape
    t = (t_min + (1 - t_min) * torch.rand(B, 1, generator=gen)).to(ans.device)
    masked = torch.rand(B, L, generator=gen).to(ans.device) < t
    x = torch.cat([pid, torch.where(masked, torch.full_like(ans, lm.mask_id), ans)], 1)
    am = torch.cat([pmask, torch.ones_like(ans)], 1)
    logits = lm(x, am)[:, pid.shape[1] :]
    if tokens is None:
        return masked_diffusion_loss(logits, ans, masked, t)
    keep = tokens.to(ans.device).bool()
    return masked_diffusion_loss(logits, ans, masked & keep, t) * (B * L) / keep.sum().clamp(min=1)
