"""Evaluation: generate with the one sampler at each decoding setting, score with the task, and return tidy
rows with accuracy, NFE, latency and provenance.

Latency is wall time per batch divided by the batch size (amortised ms per sample), with
``torch.cuda.synchronize()`` around each batch on GPU; p50/p95 are over samples. ``tokens_per_s`` counts
the whole generated canvas (``gen_length`` per sample). Use ``--batch-size 1`` for per-request latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch

from .decoding import Decoding, DecodingSpec
from .progress import progress_bar
from .provenance import config_hash, device_name, git_sha, torch_version
from .sampler import generate
from .types import Example, ResultRow, UserError

__all__ = ["Decoding", "DecodingSpec", "EvalOptions", "complete", "evaluate", "evaluation_stage"]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Completions:
    texts: list[str]
    nfe: list[float]
    latency_ms: list[float]
    seconds: float


def complete(lm, task, examples: list[Example], dec: Decoding, *, batch_size: int, generator: torch.Generator | None,
             bar=None, lockstep=None) -> Completions:
    """Generate one completion per example at decoding ``dec`` (``lockstep``: see ``sampler.generate``)."""
    style = lm.profile.prompt_style
    texts, nfe, lat = [], [], []
    total = 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        ids, mask = lm.encode_prompts([task.prompt(e, style) for e in chunk], dec.gen_length)
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        _sync(lm.device)
        t0 = time.perf_counter()
        g = generate(lm, ids, mask, dec, generator=generator, lockstep=lockstep)
        _sync(lm.device)
        dt = time.perf_counter() - t0
        total += dt
        texts += lm.decode(g.completion.cpu())
        nfe += g.nfe_per_sample.cpu().float().tolist()
        lat += [1000 * dt / len(chunk)] * len(chunk)
        if bar is not None:
            bar.advance(len(chunk))
    return Completions(texts, nfe, lat, total)


def evaluate(
    lm,
    task,
    decodings: list[Decoding],
    *,
    split: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    limit: int | None = None,
    method: str = "none",
    model_name: str | None = None,
    extra: dict | None = None,
    show_progress: bool = True,
    samples_out=None,
    n_samples: int = 1,
    dist=None,
) -> list[ResultRow]:
    """One ``ResultRow`` per decoding setting. ``extra`` is merged into each row's ``config``.

    ``n_samples > 1`` draws that many completions per problem (needs temperature > 0): the row's per-problem
    score is their mean (the pass@1 estimate) and ``metrics`` gains ``pass@k`` for k = 1, 5, 10, ... <= n,
    with the unbiased estimator. ``samples_out``: optional callable receiving ``(decoding, examples,
    completions, scored)`` (code tasks write evalplus-style samples.jsonl with it)."""
    split = split or task.eval_split
    problems, sha = task.load_with_hash(split)
    if limit is not None:
        problems = problems[:limit]
    if not problems:
        raise UserError(f"task {task.name!r} split {split!r} has no examples")
    if n_samples > 1 and any(d.temperature <= 0 for d in decodings):
        raise UserError("--n-samples > 1 needs sampling: set --temperature > 0 (greedy decoding repeats itself)")
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    mine = list(range(rank, len(problems), world))
    examples = [problems[i] for i in mine for _ in range(n_samples)]
    n_real = len(examples)
    lockstep = dist.lockstep() if dist is not None else None
    if lockstep is not None:  # sharded parameters: every rank runs the same batches (padding is dropped below)
        if any(d.use_cache for d in decodings):
            raise UserError("--use-cache is not supported with sharded parameters (FSDP): drop --use-cache")
        examples += [problems[0]] * (-(-len(problems) // world) * n_samples - n_real)
    lm.eval()
    rows = []
    total = len(examples) * len(decodings)
    with progress_bar(f"eval {task.name}/{split}", total=total, enabled=show_progress and rank == 0) as bar:
        for dec in decodings:
            gen = torch.Generator(device=lm.device).manual_seed(seed + rank)
            comp = complete(lm, task, examples, dec, batch_size=batch_size, generator=gen, bar=bar, lockstep=lockstep)
            comp = Completions(comp.texts[:n_real], comp.nfe[:n_real], comp.latency_ms[:n_real], comp.seconds)
            scored = task.score_batch(examples[:n_real], comp.texts)
            if world > 1:  # gather every rank's share, back in problem order
                parts = dist.gather_objects((mine, comp.texts, comp.nfe, comp.latency_ms, comp.seconds, scored))
                order, texts, nfe_all, lat, secs, sc = [], [], [], [], 0.0, []
                for idx, t, nf, la, se, s_ in parts:
                    order += [i for i in idx for _ in range(n_samples)]
                    texts += t
                    nfe_all += nf
                    lat += la
                    secs = max(secs, se)
                    sc += s_
                perm = sorted(range(len(order)), key=lambda j: (order[j], j))
                comp = Completions([texts[j] for j in perm], [nfe_all[j] for j in perm], [lat[j] for j in perm], secs)
                scored = [sc[j] for j in perm]
            if samples_out is not None and rank == 0:  # every problem's samples, in problem order
                samples_out(dec, [p for p in problems for _ in range(n_samples)], comp, scored)
            per_sample = [s.score for s in scored]
            scores = [float(np.mean(per_sample[i : i + n_samples])) for i in range(0, len(per_sample), n_samples)]
            nfe = [float(np.mean(comp.nfe[i : i + n_samples])) for i in range(0, len(comp.nfe), n_samples)]
            metric_names = sorted({k for s in scored for k in s.metrics})
            metrics = {k: float(np.mean([s.metrics.get(k, 0.0) for s in scored])) for k in metric_names}
            metric_scores = {k: [float(np.mean([s.metrics.get(k, 0.0) for s in scored[i : i + n_samples]]))
                                 for i in range(0, len(scored), n_samples)] for k in metric_names}
            if n_samples > 1:
                from .codeexec import pass_at_k

                for k in [1, 5, 10, 20, 50, 100]:
                    if k <= n_samples:
                        metrics[f"pass@{k}"] = float(np.mean([
                            pass_at_k(n_samples, int(round(sum(per_sample[i : i + n_samples]))), k)
                            for i in range(0, len(per_sample), n_samples)]))
            cfg = {"task": task.name, "split": split, "model": model_name or lm.name, "method": method, "seed": seed,
                   "n_samples": n_samples, "limit": limit, "decoding": dec.record(), **(extra or {})}
            if world > 1:  # sampled (temperature > 0) completions depend on the layout: each rank has its own stream
                cfg["world_size"] = world
            rows.append(
                ResultRow(
                    method=method, task=task.name, model=model_name or lm.name, split=split,
                    gen_length=dec.gen_length, steps=dec.steps, block_length=dec.block_length, decoding=dec.label,
                    temperature=dec.temperature, remasking=dec.remasking, seed=seed, n=len(problems),
                    accuracy=float(np.mean(scores)), nfe_mean=float(np.mean(comp.nfe)),
                    latency_ms_p50=float(np.percentile(comp.latency_ms, 50)),
                    latency_ms_p95=float(np.percentile(comp.latency_ms, 95)),
                    tokens_per_s=dec.gen_length * len(problems) * n_samples / max(comp.seconds, 1e-9),  # all ranks
                    metrics=metrics, scores=scores, metric_scores=metric_scores, problem_ids=[e.id for e in problems], nfe=nfe,
                    git_sha=git_sha(), config_hash=config_hash(cfg), dataset_sha256=sha,
                    device=device_name(lm.device), torch_version=torch_version(),
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"), config=cfg,
                )
            )
    return rows


def metric_of(row, metric: str, where: str) -> float:
    """A result row's score under ``metric``: "accuracy" (the task score) or one of its extra metrics.
    ``row`` is a ResultRow or its dict (a rows.jsonl line); ``where`` names the rows in the error."""
    acc, metrics = (row["accuracy"], row.get("metrics") or {}) if isinstance(row, dict) else (row.accuracy, row.metrics or {})
    if metric == "accuracy":
        return float(acc)
    if metric not in metrics:
        import difflib

        known = sorted(k for k in metrics if k != "selected_update")
        hint = difflib.get_close_matches(metric, known, n=1)
        raise UserError(f"metric {metric!r}: {where} reports no such metric" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (it has: accuracy{''.join(', ' + k for k in known)}); set train.val_metric to one of those")
    return float(metrics[metric])


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation stage runs, apart from the decoding settings."""

    split: str | None = None  # None: the task's evaluation split
    limit: int | None = None  # the first N problems (None: all)
    batch_size: int = 64  # prompts per generate call
    seed: int = 0  # sampling seed (recorded in every row)
    n_samples: int = 1  # completions per problem (> 1: pass@k)

    def check(self) -> EvalOptions:
        for flag, v in (("--batch-size", self.batch_size), ("--n-samples", self.n_samples), ("--limit", self.limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"{flag} {v!r}: must be an integer >= 1" + (" (omit it to evaluate every problem)"
                                                                          if flag == "--limit" else ""))
        return self


def evaluation_stage(lm, task, decodings: list[Decoding], opts: EvalOptions, *, timing=None, method: str = "none",
                     model_name: str | None = None, extra: dict | None = None, dist=None, show_progress: bool = True,
                     samples_out=None, group: str = "") -> list[ResultRow]:
    """The one evaluation stage of ``eval``, ``run`` (before and after training) and every sweep cell: accuracy rows
    at each setting, then, unless ``timing.reps`` is 0 or the run is multi-process, latency from a separate timing
    pass (``timing.py``) over the same settings."""
    from .timing import TimingConfig, attach

    rows = evaluate(lm, task, decodings, split=opts.split, seed=opts.seed, batch_size=opts.batch_size, limit=opts.limit,
                    method=method, model_name=model_name, extra=extra, show_progress=show_progress, samples_out=samples_out,
                    n_samples=opts.n_samples, dist=dist)
    timing = timing or TimingConfig()
    if timing.reps and (dist is None or dist.world_size == 1):  # latency from its own pass, not the accuracy pass
        problems = task.load(opts.split or task.eval_split)[: opts.limit]
        attach(rows, lm, task, decodings, problems, timing, batch_size=opts.batch_size, seed=opts.seed,
               show_progress=show_progress, group=group)
    return rows
