"""Latency you can compare: a timing pass separate from the accuracy pass.

The accuracy pass (``evaluate``) runs at any batch size and its wall time is noise for comparison: one
pass, first batch included, whatever else the machine does. Latency figures come from here instead:

- a **fixed, recorded subset** of the evaluated problems (the first ``prompts`` for per-request latency,
  the first ``batch_size`` for throughput), prompts encoded before any clock starts;
- **warm-up** (``warmup`` unrecorded rounds), then ``reps`` recorded rounds;
- each round times every item (a model at a decoding setting) **round-robin**, in an order rotated by
  one each round, so a noisy minute hits every item alike; a sweep puts all its cells into one schedule.
  Within a round the interleaving is per request: request 1 of every item, then request 2, ..., then one
  call at ``batch_size`` per item;
- per item: ms per request is the median (and IQR) of all its batch-1 requests over all rounds pooled
  (``prompts x reps`` samples: on a 2-core VM a single call's time varies by about 20%, so the median needs
  that many), and ms per sample is the median over rounds of the batch call's time / batch; on CUDA with
  ``torch.cuda.synchronize`` around each call;
- a call's sampling generator is reseeded identically every round, so every round does identical work;
- per figure: median and interquartile range over rounds, plus ms per NFE, the rounds, the thread count
  and the 1-minute load average before and after.

``rel_iqr`` = IQR / median is the spread of single calls. What decides whether a median can be told from
one 1.25x away is its own uncertainty: ``rel_ci`` (``median_rel_ci``), the half-width of an approximate 95%
interval of the median relative to it, 1.96 x 1.2533 x (IQR / 1.349) / sqrt(n) / median (normal
approximation from the quartiles; n = pooled requests, or rounds for the batch figure). Tables flag a figure
whose ``rel_ci`` exceeds ``WIDE`` = 0.11: two such intervals 1.25x apart could touch.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .types import UserError

PROTOCOL = "interleaved-v4"  # v4: a sweep's cells never share a model copy (sweep.time_cells)
WIDE = 0.11  # relative 95% half-width of a median above this: cannot be told from a median 1.25x away


def median_rel_ci(stats: dict, n: int) -> float:
    """Approximate relative 95% half-width of a median from its quartiles and sample count (see above)."""
    if not n or not stats.get("median"):
        return float("inf")
    return 1.96 * 1.2533 * ((stats["q75"] - stats["q25"]) / 1.349) / n**0.5 / stats["median"]


@dataclass(frozen=True)
class TimingConfig:
    reps: int = 9  # recorded rounds (0 = no timing pass)
    warmup: int = 1  # unrecorded rounds first
    prompts: int = 8  # requests timed one at a time per round (the first N problems of the evaluated split)
    batch_size: int | None = None  # throughput batch (default: the evaluation batch size, at most the split size)
    interleave: str = "auto"  # sweeps: one schedule for all cells ("sweep"), per cell ("cell"), or "auto" (by memory)

    def check(self) -> TimingConfig:
        for name in ("reps", "warmup", "prompts", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if name in ("reps", "warmup") else 1)):
                lo = 0 if name in ("reps", "warmup") else 1
                raise UserError(f"timing.{name}={v!r}: must be an integer >= {lo}")
        if self.interleave not in ("auto", "sweep", "cell"):
            raise UserError(f"timing.interleave={self.interleave!r}: choose auto, sweep or cell")
        return self


@dataclass
class Item:
    """One thing to time: a loaded model, its task, a decoding setting and the problems it was evaluated on."""

    key: Any
    lm: Any
    task: Any
    dec: Any  # evaluate.Decoding
    problems: list  # the evaluated problems, in order (the subset is taken from the front)
    seed: int = 0


def _encode(item: Item, n: int, batch_size: int):
    lm, task, dec = item.lm, item.task, item.dec
    style = lm.profile.prompt_style
    single = [lm.encode_prompts([task.prompt(e, style)], dec.gen_length) for e in item.problems[:n]]
    batch = lm.encode_prompts([task.prompt(e, style) for e in item.problems[:batch_size]], dec.gen_length)
    move = lambda t: (t[0].to(lm.device), t[1].to(lm.device))  # noqa: E731
    return [move(s) for s in single], move(batch)


def _call(item: Item, ids, mask) -> tuple[float, float]:
    """Seconds and mean NFE of one sampler call (its generator reseeded: identical work every time)."""
    from .evaluate import _sync
    from .sampler import generate

    dec, lm = item.dec, item.lm
    g = torch.Generator(device=lm.device).manual_seed(item.seed)
    _sync(lm.device)
    t0 = time.perf_counter()
    out = generate(lm, ids, mask, dec, generator=g)
    _sync(lm.device)
    return time.perf_counter() - t0, float(out.nfe_per_sample.float().mean())


def _stats(xs: list[float]) -> dict:
    q25, med, q75 = (float(v) for v in np.percentile(xs, [25, 50, 75]))
    return {"median": med, "q25": q25, "q75": q75, "rel_iqr": (q75 - q25) / med if med > 0 else 0.0}


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def measure(items: list[Item], cfg: TimingConfig, *, batch_size: int, show_progress: bool = True,
            group: str = "run") -> list[dict]:
    """Time ``items`` in one interleaved schedule; one timing record per item (same order)."""
    from .progress import progress_bar

    cfg = cfg.check()
    if not items or cfg.reps == 0:
        return [{} for _ in items]
    with torch.no_grad():
        for it in items:
            it.lm.eval()
        enc = []
        for it in items:
            n = min(cfg.prompts, len(it.problems))
            b = min(cfg.batch_size or batch_size, len(it.problems))
            enc.append((n, b, *_encode(it, n, b)))
        req = [[] for _ in items]  # every request's ms, all rounds pooled
        per_sample = [[] for _ in items]
        nfe_req = [[] for _ in items]
        nfe_batch = [0.0] * len(items)
        load0 = _load()
        session = uuid.uuid4().hex[:12]
        rounds = cfg.warmup + cfg.reps
        with progress_bar(f"timing ({len(items)} items x {cfg.reps} rounds)", total=rounds * len(items), enabled=show_progress) as bar:
            for r in range(rounds):
                order = list(range(len(items)))
                k = r % len(items)
                order = order[k:] + order[:k]  # rotated: no item always goes first after a pause
                # request-level interleaving: request j of every item, then request j + 1 ..., then the batch calls,
                # so a slow second of the round is spread over all items
                for j in range(max(e[0] for e in enc)):
                    for i in order:
                        n, _, single, _ = enc[i]
                        if j < n:
                            sec, nfe = _call(items[i], *single[j])
                            if r >= cfg.warmup:
                                req[i].append(1000 * sec)
                                nfe_req[i].append(nfe)
                for i in order:
                    _, b, _, (bids, bmask) = enc[i]
                    bsec, bnfe = _call(items[i], bids, bmask)
                    if r >= cfg.warmup:
                        per_sample[i].append(1000 * bsec / b)
                        nfe_batch[i] = bnfe
                    bar.advance(1)
        load1 = _load()
    from .provenance import git_sha

    sha = git_sha()
    out = []
    for i, it in enumerate(items):
        n, b = enc[i][0], enc[i][1]
        rq = _stats(req[i])
        out.append({
            "protocol": PROTOCOL, "session": session, "group": group, "group_items": len(items),
            "request_ms": rq, "sample_ms": _stats(per_sample[i]), "batch_size": b, "prompts": n,
            "prompt_ids": [e.id for e in it.problems[:n]], "reps": cfg.reps, "warmup": cfg.warmup, "requests": len(req[i]),
            "nfe_request": float(np.mean(nfe_req[i])) if nfe_req[i] else 0.0, "nfe_batch": nfe_batch[i],
            "ms_per_nfe": rq["median"] / float(np.mean(nfe_req[i])) if nfe_req[i] and np.mean(nfe_req[i]) > 0 else None,
            "threads": torch.get_num_threads(), "loadavg": [load0, load1], "device": str(it.lm.device), "git_sha": sha,
        })
    return out


def attach(rows, lm, task, decodings, problems, cfg: TimingConfig, *, batch_size: int, seed: int = 0,
           show_progress: bool = True, group: str = "run") -> None:
    """Time one model at each of ``decodings`` (one schedule) and store the records in ``rows[i].timing``."""
    items = [Item(i, lm, task, d, problems, seed) for i, d in enumerate(decodings)]
    for row, rec in zip(rows, measure(items, cfg, batch_size=batch_size, show_progress=show_progress, group=group)):
        row.timing = rec
