"""Evaluation: generate with the one sampler at each decoding setting, score with the task, and return tidy
rows with accuracy, NFE, latency and provenance.

Latency is wall time per batch divided by the batch size (amortised ms per sample), with
``torch.cuda.synchronize()`` around each batch on GPU; p50/p95 are over samples. ``tokens_per_s`` counts
the whole generated canvas (``gen_length`` per sample). Use ``--batch-size 1`` for per-request latency.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import torch

from .progress import progress_bar
from .provenance import config_hash, device_name, git_sha, torch_version
from .sampler import check_schedule, generate
from .types import Example, ResultRow, UserError


@dataclass(frozen=True)
class Decoding:
    gen_length: int
    steps: int
    block_length: int
    temperature: float = 0.0
    remasking: str = "low_confidence"
    threshold: float | None = None  # confidence-threshold parallel decoding (steps then adapt)
    cfg_scale: float = 0.0
    use_cache: bool = False
    stop_at_eos: bool = False
    schedule: str = "even"  # "even" (LLaDA) | "dream" (Dream/DiffuCoder)
    top_p: float | None = None
    top_k: int | None = None
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False

    @property
    def label(self) -> str:
        return "fixed" if self.threshold is None else f"threshold={self.threshold:g}"

    def kwargs(self) -> dict:
        """The setting as recorded in rows: options added after the first release appear only when set, so
        the config hashes of earlier rows stay valid."""
        d = asdict(self)
        for k, default in LATER_DEFAULTS.items():
            if d[k] == default:
                del d[k]
        return d

    def sampler_kwargs(self) -> dict:
        return asdict(self)


RULE_KEYS = ("temperature", "remasking", "schedule", "top_p", "top_k", "logits_eos_inf", "confidence_eos_eot_inf")
BASE_RULE = {"temperature": 0.0, "remasking": "low_confidence", "schedule": "even", "top_p": None, "top_k": None,
             "logits_eos_inf": False, "confidence_eos_eot_inf": False}


def whole_canvas(profile) -> bool:
    """Does the family rank masked positions over the whole canvas (Dream: one block = the generated length)?"""
    rec = getattr(profile, "recommended", None) or {}
    return bool(rec.get("block_length")) and rec.get("block_length") == rec.get("gen_length")


def decoding_rule(profile=None, **given) -> dict:
    """The decoding rule (temperature, remasking, schedule, filters, end-token options): what the user gave,
    else the model family's own (``profile.recommended``: Dream and DiffuCoder decode with Dream's schedule,
    entropy confidence and top-p sampling), else LLaDA's greedy low-confidence rule."""
    bad = set(given) - set(RULE_KEYS)
    if bad:
        raise TypeError(f"not decoding-rule options: {sorted(bad)}")
    rec = getattr(profile, "recommended", None) or {}
    return {k: given[k] if given.get(k) is not None else rec.get(k, BASE_RULE[k]) for k in RULE_KEYS}


LATER_DEFAULTS = {k: BASE_RULE[k] for k in ("schedule", "top_p", "top_k", "logits_eos_inf", "confidence_eos_eot_inf")}


def decoding_grid(
    task,
    *,
    gen_length: int | None = None,
    steps: list[int] | None = None,
    block_length: int | None = None,
    thresholds: list[float] | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    use_cache: bool = False,
    stop_at_eos: bool = False,
    schedule: str = "even",
    top_p: float | None = None,
    top_k: int | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
) -> list[Decoding]:
    """Fixed-step settings for each of ``steps`` plus one threshold setting per ``thresholds``. Checks every
    setting's schedule up front, so a bad combination fails before any model work."""
    from .sampler import REMASKING, SCHEDULES

    if schedule not in SCHEDULES:
        raise UserError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)} (even: LLaDA's split; dream: Dream's)")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"--top-p {top_p}: must be in (0, 1]")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k {top_k}: must be >= 1")
    if remasking not in REMASKING:
        hint = difflib.get_close_matches(remasking, REMASKING, n=1) or [r for r in REMASKING if r.startswith(remasking[:3])]
        raise UserError(f"--remasking {remasking!r} is not a remasking rule; choose one of {', '.join(REMASKING)}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if not temperature >= 0:
        raise UserError(f"--temperature {temperature}: must be >= 0 (0 = greedy)")
    if not cfg_scale >= 0:
        raise UserError(f"--cfg {cfg_scale}: the guidance scale must be >= 0 (0 = off)")
    for name, v in (("--gen-length", gen_length), ("--block-length", block_length)):
        if v is not None and v < 1:
            raise UserError(f"{name} {v}: must be >= 1")
    L = gen_length or task.gen_length
    blk = block_length or min(task.block_length, L)
    steps = steps or list(task.eval_steps or (task.steps,))
    common = dict(temperature=temperature, remasking=remasking, cfg_scale=cfg_scale, use_cache=use_cache, stop_at_eos=stop_at_eos,
                  schedule=schedule, top_p=top_p, top_k=top_k, logits_eos_inf=logits_eos_inf,
                  confidence_eos_eot_inf=confidence_eos_eot_inf)
    out = []
    for s in steps:
        try:
            check_schedule(L, blk, s, None)
        except ValueError as e:
            raise UserError(str(e)) from None
        out.append(Decoding(L, s, blk, **common))
    for th in thresholds or []:
        try:
            check_schedule(L, blk, L, th)
        except ValueError as e:
            raise UserError(str(e)) from None
        out.append(Decoding(L, L, blk, threshold=th, **common))
    return out


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
        g = generate(lm, ids, mask, **dec.sampler_kwargs(), generator=generator, lockstep=lockstep)
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
                   "n_samples": n_samples, "limit": limit, "decoding": dec.kwargs(), **(extra or {})}
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
