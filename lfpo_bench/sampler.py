"""The one masked-diffusion sampler, shared by evaluation, rollouts and benchmarks.

Semantics follow LLaDA's reference ``generate`` (see docs/sampler.md):

- the canvas is the (left-padded) prompt followed by ``gen_length`` mask tokens;
- blocks of ``block_length`` are decoded left to right, ``steps`` split evenly over the blocks;
- inside a block the masked count n is split evenly over the block's steps: base = n // steps, and the
  first n % steps steps commit one more token;
- each step predicts x0 by argmax (temperature 0) or float64 Gumbel-max (temperature > 0);
- confidence is softmax(logits)[x0] (``low_confidence``) or uniform noise (``random``); only masked
  positions of the current block compete, and the top-k by confidence are committed, never remasked;
- ``threshold=tau`` (Fast-dLLM parallel decoding) commits every masked token of the block whose confidence
  is >= tau, and at least one per step, so the number of steps adapts;
- CFG: the unconditional pass masks the prompt; logits = u + (s + 1) * (c - u).

Other families' published decoding, as options (``docs/sampler.md``):

- ``schedule="dream"`` (Dream/DiffuCoder): with t = 1 - i (1 - eps) / n and s = t - (1 - eps) / n at step i of
  a block's n steps, commit floor(m (1 - s / t)) of the row's m still-masked tokens, and all of them at the
  last step (eps = 1e-3); Dream ranks over the whole canvas: use ``block_length = gen_length``;
- ``remasking`` "maskgit_plus" (probability of x0), "topk_margin" (top-1 minus top-2 probability) and
  "entropy" (negative entropy): Dream's confidences, computed on the tempered (``logits / temperature``) and
  ``top_p``/``top_k``-filtered distribution that x0 is drawn from; "low_confidence" keeps LLaDA's
  ``softmax(logits)[x0]``;
- ``top_p`` / ``top_k``: nucleus / top-k filtering of the logits before x0 is drawn (any rule);
- ``logits_eos_inf`` (LLaDA's HumanEval setting): EOS (the profile's first end id) can never be drawn;
  ``confidence_eos_eot_inf`` (LLaDA's GSM8K-512/Math/MBPP setting): confidences come from a softmax with every
  end id (EOS and EoT) removed, so a predicted end token has confidence 0 and is committed last. (LLaDA's code
  does this at temperature 0; at temperature > 0 its chained assignment removes only EoT from the softmax.
  Here both are removed at every temperature.)

Differences from the reference that do not change the distribution of outputs:

- the Gumbel draw uses the log form ``logits - tau * log(-log U)`` in float64, which has the same argmax as
  the reference's ``exp(logits) / (-log U) ** tau`` but cannot overflow;
- noise and softmax are computed for the current block only, not the whole vocabulary x sequence.

The prefix KV cache (``use_cache=True``, Fast-dLLM style) recomputes the cache once per block: it is an
approximation for bidirectional models, exact only at the first step of each block (see docs/sampler.md).
"""

from __future__ import annotations

import math

import torch

from .decoding import REMASKING, SCHEDULES, Decoding, check_schedule
from .types import Generation

__all__ = ["REMASKING", "SCHEDULES", "Decoding", "check_schedule", "generate", "state_at"]
DREAM_EPS = 1e-3


def dream_transfer(n_masked: torch.Tensor, i: int, steps: int, eps: float = DREAM_EPS) -> torch.Tensor:
    """Dream's count for step ``i`` of ``steps``: floor(m (1 - s/t)) of the m still-masked tokens, all at the last."""
    if i >= steps - 1:
        return n_masked.long()
    t = 1.0 - i * (1.0 - eps) / steps
    s = 1.0 - (i + 1) * (1.0 - eps) / steps
    return torch.floor(n_masked.double() * (1.0 - s / t)).long()


def filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None, temperature: float = 0.0) -> torch.Tensor:
    """Logits outside the top-k, or outside the nucleus (tokens after the cumulative probability of the
    tempered distribution has passed top_p), set to -inf; the most likely token always stays. As Dream's
    ``top_k_logits``/``top_p_logits`` on ``logits / temperature``."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        scaled = logits.float() / temperature if temperature > 0 else logits.float()
        srt, idx = scaled.sort(-1, descending=True)
        p = torch.softmax(srt, -1)
        drop = (p.cumsum(-1) - p) > top_p  # the mass before this token already exceeds top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), -math.inf)
    return logits


def confidence(rule: str, logits: torch.Tensor, x0: torch.Tensor, temperature: float, generator, exclude=()) -> torch.Tensor:
    """Per-position confidence of ``x0`` under ``rule`` (see the module docstring). ``exclude``: token ids
    removed from the softmax first (``confidence_eos_eot_inf``)."""
    if rule == "random":
        return uniform(x0.shape, generator, x0.device)
    lg = logits.float()
    if exclude:
        lg = lg.clone()
        lg[..., list(exclude)] = -math.inf
    if rule == "low_confidence":
        return torch.gather(torch.softmax(lg, -1), -1, x0[..., None]).squeeze(-1)
    p = torch.softmax(lg / temperature if temperature > 0 else lg, -1)
    if rule == "maskgit_plus":
        return torch.gather(p, -1, x0[..., None]).squeeze(-1)
    if rule == "topk_margin":
        top2 = p.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if rule == "entropy":
        return (p * torch.log(p + 1e-10)).sum(-1)
    raise ValueError(f"unknown remasking {rule!r}; choose one of {REMASKING}")


def num_transfer_tokens(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Split each row's masked count over ``steps``: base = n // steps, first n % steps steps get one more.

    ``n_masked``: [B] int. Returns [B, steps] int64 whose rows sum to ``n_masked``.
    """
    n = n_masked.long()
    base = n // steps
    rem = n % steps
    out = base[:, None].expand(-1, steps).clone()
    out += (torch.arange(steps, device=n.device)[None, :] < rem[:, None]).long()
    return out


Generators = "torch.Generator | list[torch.Generator] | None"


def uniform(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """U(0,1) noise. ``generator`` may be a list: generator i draws the i-th equal slice of rows, so a
    row's noise does not depend on which other rows share its batch (rollouts shard across ranks)."""
    if isinstance(generator, (list, tuple)):
        n = len(generator)
        if shape[0] % n:
            raise ValueError(f"{shape[0]} rows do not split evenly over {n} generators")
        rows = (shape[0] // n, *shape[1:])
        return torch.cat([torch.rand(rows, dtype=dtype, device=device, generator=g) for g in generator])
    return torch.rand(shape, dtype=dtype, device=device, generator=generator)


def sample_tokens(logits: torch.Tensor, temperature: float, generator: Generators) -> torch.Tensor:
    """x0 = argmax at temperature 0, else Gumbel-max in float64. ``logits``: [..., V] -> [...] int64."""
    if temperature <= 0:
        return logits.argmax(-1)
    u = uniform(logits.shape, generator, logits.device, torch.float64)
    # argmax(exp(l) / (-log u)^tau) == argmax(l - tau * log(-log u)); the log form cannot overflow
    g = logits.double() - temperature * torch.log(-torch.log(u.clamp_min(1e-300)))
    return g.argmax(-1)


def block_logits(model, x: torch.Tensor, am: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Logits of positions s..e-1; the LM head runs on those positions alone when the model supports it."""
    if getattr(model, "supports_logits_range", False):
        return model(x, am, logits_range=(s, e))
    return model(x, am)[:, s:e]


@torch.no_grad()
def generate(
    model,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    decoding: Decoding | None = None,
    *,
    generator: Generators = None,
    record_trajectory: bool = False,
    lockstep=None,
) -> Generation:
    """Generate ``decoding.gen_length`` tokens after each (left-padded) prompt at the setting ``decoding`` (a
    validated ``Decoding``; see the module docstring for what each field does).

    ``record_trajectory`` also returns ``commit_logp``: log softmax(logits)[token] at the pass that
    committed it (with CFG, of the guided logits). ``model`` is a ``DiffusionLM`` (or any callable ``(ids, attention_mask) -> logits`` with ``mask_id``
    and ``profile.eos_ids``). ``stop_at_eos``: once every row holds an EOS in its finished blocks, the
    remaining blocks are filled with EOS without further forward passes (saves NFE; the reference
    sampler would keep denoising). ``lockstep`` (``lfpo_bench.distributed.Lockstep``, for sharded models whose
    forwards are collectives): once this rank is done it runs dummy forwards until every rank is, so threshold
    decoding and ``stop_at_eos`` stay in step across ranks without changing any rank's output. Returns a ``Generation`` with per-sample NFE in
    ``Generation.nfe_per_sample`` (forward passes during which the row still had masks in its block).
    """
    if not isinstance(decoding, Decoding):
        raise TypeError(f"generate() takes the decoding setting as a Decoding, got {type(decoding).__name__}")
    d = decoding
    gen_length, block_length, threshold = d.gen_length, d.block_length, d.threshold
    temperature, remasking, cfg_scale, stop_at_eos, use_cache = d.temperature, d.remasking, d.cfg_scale, d.stop_at_eos, d.use_cache
    schedule, top_p, top_k, logits_eos_inf, confidence_eos_eot_inf = d.schedule, d.top_p, d.top_k, d.logits_eos_inf, d.confidence_eos_eot_inf
    spb = d.steps_per_block
    device = prompt_ids.device
    B, P = prompt_ids.shape
    mask_id = model.mask_id
    eos_ids = tuple(getattr(getattr(model, "profile", None), "eos_ids", ()) or ())
    if (logits_eos_inf or confidence_eos_eot_inf) and not eos_ids:
        raise ValueError("logits_eos_inf / confidence_eos_eot_inf need the model's end-of-text ids (profile.eos_ids)")
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    am = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)], 1)
    x = torch.cat([prompt_ids, torch.full((B, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)], 1)
    commit = torch.full((B, gen_length), -1, dtype=torch.long, device=device)
    commit_logp = torch.zeros((B, gen_length), dtype=torch.float32, device=device) if record_trajectory else None
    nfe_row = torch.zeros(B, dtype=torch.long, device=device)
    prompt_pos = attention_mask.bool()  # real prompt tokens (masked in the CFG unconditional pass)
    if use_cache and not getattr(model, "supports_cache", False):
        raise ValueError(f"model {getattr(model, 'name', model)!r} has no KV-cache support; drop use_cache")
    if use_cache and lockstep is not None:
        raise ValueError("use_cache is not supported with sharded parameters (FSDP); drop use_cache")

    def forward(step_in_block: int, s: int, e: int, cache_state: dict) -> torch.Tensor:
        """Logits of the current block ``[B, e-s, V]``."""
        if lockstep is not None:
            lockstep.going()
        if cfg_scale > 0:
            un = x.clone()
            un[:, :P][prompt_pos] = mask_id
            lg = block_logits(model, torch.cat([x, un]), torch.cat([am, am]), s, e)
            c, u = lg[:B], lg[B:]
            return u + (cfg_scale + 1.0) * (c - u)
        if use_cache:
            if step_in_block == 0:
                lg, cache_state["kv"] = model.forward_with_cache(x, am, prefix_len=s)
                return lg[:, s:e]
            lg = model.forward_suffix(x[:, s:], am, cache_state["kv"])
            return lg[:, : e - s]
        return block_logits(model, x, am, s, e)

    passes = 0
    n_blocks = gen_length // block_length
    for b in range(n_blocks):
        s, e = P + b * block_length, P + (b + 1) * block_length
        blk_mask = x[:, s:e] == mask_id  # [B, bl]
        plan = num_transfer_tokens(blk_mask.sum(1), spb) if threshold is None and schedule == "even" else None
        cache_state: dict = {}
        i = 0
        while True:
            if threshold is None and i >= spb:
                break
            blk_mask = x[:, s:e] == mask_id
            active = blk_mask.any(1)
            if threshold is not None and not bool(active.any()):
                break
            logits = forward(i, s, e, cache_state)  # [B, bl, V]
            passes += 1
            nfe_row += active.long()
            lg = logits
            if logits_eos_inf:
                lg = lg.clone()
                lg[..., eos_ids[0]] = -math.inf
            if top_p is not None or top_k is not None:
                lg = filter_logits(lg, top_p, top_k, temperature)
            x0 = sample_tokens(lg, temperature, generator)  # [B, bl]
            conf = confidence(remasking, lg, x0, temperature, generator, eos_ids if confidence_eos_eot_inf else ())
            conf = torch.where(blk_mask, conf, torch.full_like(conf, -math.inf))
            if threshold is None:
                k = plan[:, i] if plan is not None else dream_transfer(blk_mask.sum(1), i, spb)  # [B]
                kmax = int(k.max())
                transfer = torch.zeros_like(blk_mask)
                if kmax > 0:
                    top = conf.topk(kmax, dim=-1).indices  # [B, kmax]
                    keep = torch.arange(kmax, device=device)[None, :] < k[:, None]
                    transfer.scatter_(1, top, keep)
            else:
                transfer = blk_mask & (conf >= threshold)
                best = conf.argmax(-1)
                need = active & ~transfer.any(1)
                transfer[need, best[need]] = True
            blk = x[:, s:e]
            x[:, s:e] = torch.where(transfer, x0, blk)
            cs = commit[:, s - P : e - P]
            commit[:, s - P : e - P] = torch.where(transfer, torch.full_like(cs, passes - 1), cs)
            if commit_logp is not None:
                lp = torch.gather(torch.log_softmax(logits.float(), -1), -1, x0[..., None]).squeeze(-1)
                cl = commit_logp[:, s - P : e - P]
                commit_logp[:, s - P : e - P] = torch.where(transfer, lp, cl)
            i += 1
        if stop_at_eos and eos_ids and b < n_blocks - 1:
            done = x[:, P:e]
            has_eos = torch.zeros(B, dtype=torch.bool, device=device)
            for t in eos_ids:
                has_eos |= (done == t).any(1)
            if bool(has_eos.all()):
                rest = x[:, e:]
                fill = rest == mask_id
                x[:, e:] = torch.where(fill, torch.full_like(rest, eos_ids[0]), rest)
                # a virtual pass after the last one: masked in every recorded state
                commit[:, e - P :] = torch.where(fill, torch.full_like(fill, passes, dtype=torch.long), commit[:, e - P :])
                break
    if lockstep is not None:
        lockstep.drain(lambda: model(x[:1], am[:1]))
    nfe_mult = 2 if cfg_scale > 0 else 1
    return Generation(
        sequences=x,
        completion=x[:, P:],
        prompt_len=P,
        nfe=passes * nfe_mult,
        steps=passes,
        nfe_per_sample=nfe_row * nfe_mult,
        commit_step=commit if record_trajectory else None,
        commit_logp=commit_logp,
    )


def state_at(completion: torch.Tensor, commit_step: torch.Tensor, step: int | torch.Tensor, mask_id: int) -> torch.Tensor:
    """Rebuild the completion as it was fed to forward pass ``step``: tokens committed at an earlier pass
    are clean, the rest masked. ``step`` may be a per-row tensor [B]."""
    if isinstance(step, torch.Tensor):
        step = step.view(-1, 1)
    clean = commit_step < step
    return torch.where(clean, completion, torch.full_like(completion, mask_id))
