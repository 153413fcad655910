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
- ``step_merge_logps``: d2's StepMerge (the same replay with the rollout's steps cut into N segments at
  ``int(j * steps / N)``, the prompt masked as d1 does); with N = steps and no prompt masking it equals
  ``trajectory_logps`` at ``shrink=1``.
"""

from __future__ import annotations

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
    """The first step of each of d2's N segments: 0 and ``int(j * n_steps / N)`` for j = 1..N-1 (N <= n_steps,
    so the starts are distinct)."""
    if not 1 <= n_merged <= n_steps:
        raise ValueError(f"StepMerge needs 1 <= N <= steps, got N={n_merged} at {n_steps} steps")
    return [0] + [int(j * n_steps / n_merged) for j in range(1, n_merged)]


def step_merge_segment(commit_step: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """Segment of each completion position, [N, L]: the last segment whose first step is <= its commit step."""
    starts = torch.tensor(bounds, device=commit_step.device)
    return (commit_step.clamp(min=0)[..., None] >= starts).sum(-1) - 1


def step_merge_logps(policy, prompt_ids, prompt_mask, completion, commit_step, *, mask_id: int, n_steps: int,
                     n_merged: int, p_mask_prompt: float = 0.0, gen: torch.Generator | None = None,
                     only: int | None = None) -> torch.Tensor:
    """d2 StepMerge: log p(token | state at the start of its segment), [N, L]. The rollout's ``n_steps`` are
    cut into ``n_merged`` segments (``step_merge_bounds``); segment j's input is the completion with the tokens
    committed before its first step clean and the rest masked, and the prompt with each token masked w.p.
    ``p_mask_prompt`` (one draw from ``gen``, the same for every segment); its targets are the tokens committed
    inside it. One forward pass per segment, always (``only``: just segment ``only``, the rest 0), so the pass
    count never depends on the data."""
    bounds = step_merge_bounds(n_steps, n_merged)
    seg = step_merge_segment(commit_step, bounds)  # [N, L]
    prompt_in = prompt_ids
    if p_mask_prompt > 0:
        drop = _rand(prompt_ids.shape, gen, prompt_ids.device) < p_mask_prompt
        prompt_in = _masked(prompt_ids, drop & prompt_mask.bool(), mask_id)
    out = torch.zeros(completion.shape, device=completion.device)
    for j, b in enumerate(bounds):
        if only is not None and j != only:
            continue
        state = state_at(completion, commit_step, b, mask_id)  # [N, L]: committed before step b clean
        lp = token_logps(completion_logits(policy, prompt_in, prompt_mask, state), completion)
        out = torch.where(seg == j, lp, out)
    return out


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
