"""Reporting: pure pandas functions of results rows (no model, no I/O besides reading rows).

- ``comparison_table``: methods x (task, setting), accuracy with a 95% bootstrap CI over problems and
  seeds; best per column in bold; ``paired_vs`` marks differences significant under a paired bootstrap
  over the same problems (or an exact McNemar test when scores are 0/1);
- ``latency_table``: per method and setting, mean NFE and the timing pass's figures (``timing.py``): ms
  per request (batch 1) with its interquartile range, ms per sample at the timing batch, ms per NFE; a
  flag where the dispersion is too wide to separate the row from one 1.25x away. Rows without a timing
  pass (written before it existed, or with it off) show the accuracy pass's single-pass p50, marked;
- ``equal_accuracy``: per method, the fewest mean NFE, and separately the fewest ms per request and per
  sample, among its decoding settings that reach a target accuracy, with ratios to a baseline method;
- ``delta_table``: every variant against a base method label (ablations): accuracy difference with a paired
  bootstrap CI over the same problems and a paired test;
- ``check_provenance``: rows from different code versions or datasets must not be mixed silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .results import read_rows
from .types import UserError

log = logging.getLogger(__name__)


def load_rows(paths: Iterable[str | Path], stage: str | None = "after", metric: str = "accuracy") -> pd.DataFrame:
    """Rows from JSONL files or folders (``rows.jsonl`` inside), as a DataFrame; ``stage`` keeps only
    trained-and-evaluated rows ("after": the checkpoint each run's validation selected; "last": its last update,
    or its one checkpoint when it did not train; plain ``eval`` rows are kept too). ``metric``: "accuracy" (the
    task score) or one of the task's extra metrics (e.g. "solved"), which then becomes ``scores``."""
    recs = []
    for p in paths:
        p = Path(p)
        files = [p / "rows.jsonl"] if p.is_dir() else [p]
        for f in files:
            if not f.exists():
                raise UserError(f"no results at {f}")
            chosen = {}  # a tune's final sweep: each method's chosen configuration names its rows
            if (f.parent / "chosen.json").exists() and f.name == "rows.jsonl":
                import json

                chosen = json.loads((f.parent / "chosen.json").read_text())
            timing = {}  # a sweep's timing pass: joined by (cell, config hash); the latest record wins
            if (f.parent / "timing.jsonl").exists() and f.name == "rows.jsonl":
                timing = {(t["cell"], t["config_hash"]): t["timing"] for t in read_rows(f.parent / "timing.jsonl")}
            for r in read_rows(f):
                r["_source"] = str(f)
                if r.get("method") in chosen:
                    r["chosen"] = chosen[r["method"]]
                if (r.get("cell"), r.get("config_hash")) in timing:
                    r["timing"] = timing[(r["cell"], r["config_hash"])]
                recs.append(r)
    if not recs:
        raise UserError("no result rows found")
    if metric != "accuracy":
        known = sorted({k for r in recs for k in (r.get("metric_scores") or {})} | {k for r in recs for k in (r.get("metrics") or {})})
        if known and metric not in known:
            import difflib

            hint = difflib.get_close_matches(metric, known, n=1)
            raise UserError(f"--metric {metric!r}: these rows have no such metric" + (f"; did you mean {hint[0]!r}?" if hint else "")
                            + f" (they have: accuracy, {', '.join(known)})")
        missing = [r.get("run_id") or r["_source"] for r in recs if metric not in (r.get("metric_scores") or {})]
        if missing:
            raise UserError(f"metric {metric!r} has no per-problem values in {len(missing)} row(s) (e.g. {missing[0]}); "
                            "rows written before per-problem metrics were recorded support only 'accuracy'")
        for r in recs:
            r["scores"] = r["metric_scores"][metric]
    df = pd.DataFrame(recs)
    if "timing" not in df:
        df["timing"] = [{} for _ in range(len(df))]
    df["timing"] = [t if isinstance(t, dict) else {} for t in df["timing"]]
    key = ["run_id", "stage", "method", "task", "split", "gen_length", "block_length", "steps", "decoding", "seed"]
    if "run_id" in df and df["run_id"].astype(bool).any():
        dup = df.duplicated(subset=[k for k in key if k in df], keep="first") & df["run_id"].astype(bool)
        if dup.any():  # e.g. a sweep folder and its runs/ both given: count each row once
            log.warning("ignoring %d duplicate rows (same run, stage and setting)", int(dup.sum()))
            df = df[~dup]
    if stage is not None and "stage" in df:
        keep = df["stage"].isin([stage, "eval"])
        if stage == "last":  # a run that did not train has no last update: its one checkpoint stands in
            runs = df["run_id"] if "run_id" in df else pd.Series("", index=df.index)
            keep |= (df["stage"] == "after") & ~runs.isin(set(runs[df["stage"] == "last"]))
        df = df[keep]
        if df.empty:
            raise UserError(f"no {stage!r} rows in {', '.join(map(str, paths))}: the run(s) have not finished training yet "
                            "(only the starting policy was evaluated); finish them with `lfpo-bench run ... --resume`")
    df["setting"] = df.apply(setting_label, axis=1)
    return df.reset_index(drop=True)


def setting_order(label: str) -> tuple:
    """Sort key for setting labels: length, block, fixed steps ascending, then thresholds descending."""
    L, b, dec = label.split("/", 2)
    if dec.startswith("s"):
        return (int(L[1:]), int(b[1:]), 0, int(dec[1:]))
    return (int(L[1:]), int(b[1:]), 1, -float(dec.split("=")[1]))


def setting_label(r) -> str:
    dec = r["decoding"]
    base = f"L{r['gen_length']}/b{r['block_length']}"
    return f"{base}/{dec}" if dec != "fixed" else f"{base}/s{r['steps']}"


def method_label(r) -> str:
    """``method[k=v,...]``: a tuned method's chosen configuration, else the method config the sweep varied."""
    cfg = r.get("method_cfg") if isinstance(r.get("method_cfg"), dict) else {}
    if isinstance(r.get("chosen"), dict):
        cfg = r["chosen"]
    return r["method"] + ("[" + ",".join(f"{k}={v}" for k, v in sorted(cfg.items())) + "]" if cfg else "")


def labels(df: pd.DataFrame) -> pd.Series:
    """Each row's method label. A tuned method whose chosen configuration differs between tasks (one choice
    per task) is one row, ``method[tuned]``, so tables across tasks keep one line per method; ``tuned_note``
    says what each task chose."""
    lab = df.apply(method_label, axis=1)
    if "chosen" not in df:
        return lab
    tuned = df["chosen"].apply(lambda c: isinstance(c, dict))
    for m in set(df.loc[tuned, "method"]):
        sel = tuned & (df["method"] == m)
        if lab[sel].nunique() > 1 and (lab[sel].groupby(df.loc[sel, "task"]).nunique() == 1).all():
            lab[sel] = f"{m}[tuned]"
    return lab


def tuned_note(df: pd.DataFrame) -> str:
    """``tuned per task: lfpo: sudoku4 train.lr=1e-4, toy-code train.lr=1e-5; ...`` for collapsed labels."""
    if "chosen" not in df:
        return ""
    lab = labels(df)
    parts = []
    for m in sorted({x[:-len("[tuned]")] for x in set(lab) if x.endswith("[tuned]")}):
        sel = (lab == f"{m}[tuned]")
        per = {t: c for t, c in zip(df.loc[sel, "task"], df.loc[sel, "chosen"])}
        parts.append(f"{m}: " + ", ".join(f"{t} " + (",".join(f"{k}={v}" for k, v in sorted(c.items())) or "defaults")
                                          for t, c in sorted(per.items())))
    return ("tuned per task: " + "; ".join(parts)) if parts else ""


def resolve_method(df: pd.DataFrame, name: str, flag: str) -> dict:
    """{task: label} of the rows ``name`` means: a label, or a method name with one label per task."""
    if name in set(df["method_label"]):
        return {t: name for t in set(df["task"])}
    sub = df[df["method"] == name]
    if len(sub) and (sub.groupby("task")["method_label"].nunique() == 1).all():
        return sub.groupby("task")["method_label"].first().to_dict()
    import difflib

    have = sorted(set(df["method_label"]))
    hint = difflib.get_close_matches(name, have + sorted(set(df["method"])), n=1)
    raise UserError(f"{flag} {name!r}: no rows of that method" + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (have: {', '.join(have)})")


# ---- statistics --------------------------------------------------------------------------------------
def score_matrix(group: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """[seeds, problems] scores of one (method, task, setting) group, problems aligned by id."""
    ids = sorted(set.intersection(*[set(x) for x in group["problem_ids"]]))
    mats = []
    for _, r in group.sort_values("seed").iterrows():
        pos = {pid: i for i, pid in enumerate(r["problem_ids"])}
        mats.append([r["scores"][pos[i]] for i in ids])
    return np.asarray(mats, dtype=float), ids


def bootstrap_ci(m: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a [seeds, problems] score matrix with a percentile CI, resampling problems and seeds."""
    m = np.atleast_2d(m)
    rng = np.random.default_rng(seed)
    S, N = m.shape
    pi = rng.integers(0, N, size=(n_boot, N))
    si = rng.integers(0, S, size=(n_boot, S))
    per_seed = m[:, pi].mean(axis=2)  # [S, n_boot]: each seed's mean over resampled problems
    boots = np.take_along_axis(per_seed.T, si, axis=1).mean(axis=1)  # resample seeds
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(m.mean()), float(lo), float(hi)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value that mean(a - b) = 0, resampling problems (a, b: per-problem scores, aligned)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if np.allclose(d, 0):
        return 1.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return float(min(1.0, p))


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 outcomes."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n * 2
    return float(min(1.0, p))


def paired_p(a: np.ndarray, b: np.ndarray) -> float:
    binary = np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()
    return mcnemar(a, b) if binary else paired_bootstrap(a, b)


SEED_AWARE = ("paired over problems, training seeds resampled (hierarchical bootstrap); with one seed on each side, "
              "exact McNemar (0/1 scores) or a paired bootstrap over problems, which cannot see seed-to-seed spread")


def hierarchical_deltas(A: np.ndarray, B: np.ndarray, n_boot: int = 2000, seed: int = 0, chunk: int = 250) -> np.ndarray:
    """Bootstrap replicates of mean(A) - mean(B) for two [seeds, problems] score matrices on the same problems.

    Each replicate resamples the problems once for both sides (the problems are paired) and, independently,
    each side's training seeds (independent runs): the spread of a replicate is the problem-to-problem and
    the seed-to-seed variance together. Replicates are drawn in chunks, so memory stays at
    ``chunk x seeds x problems``."""
    A, B = np.atleast_2d(np.asarray(A, float)), np.atleast_2d(np.asarray(B, float))
    rng = np.random.default_rng(seed)
    (Sa, N), Sb = A.shape, B.shape[0]
    out = []
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        pi = rng.integers(0, N, size=(n, N))
        ma, mb = A[:, pi].mean(2).T, B[:, pi].mean(2).T  # [n, seeds]: each seed's mean over the resampled problems
        sa, sb = rng.integers(0, Sa, size=(n, Sa)), rng.integers(0, Sb, size=(n, Sb))
        out.append(np.take_along_axis(ma, sa, 1).mean(1) - np.take_along_axis(mb, sb, 1).mean(1))
    return np.concatenate(out)


def seed_aware_compare(A: np.ndarray, B: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
                       ) -> tuple[float, float, float, float]:
    """(mean difference, CI low, CI high, two-sided p) of A - B, [seeds, problems] each (``SEED_AWARE``)."""
    A, B = np.atleast_2d(np.asarray(A, float)), np.atleast_2d(np.asarray(B, float))
    d = float(A.mean() - B.mean())
    if A.shape[0] == 1 and B.shape[0] == 1:  # no seed spread to resample: the problem-level paired test
        diff = A[0] - B[0]
        boots = diff[np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))].mean(1)
        p = paired_p(A[0], B[0])
    else:
        boots = hierarchical_deltas(A, B, n_boot, seed)
        p = 1.0 if np.allclose(boots, 0) else float(min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean())))
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return d, float(lo), float(hi), p



def compare_on_shared(group: tuple[np.ndarray, list[str]], base: tuple[np.ndarray, list[str]], n_boot: int = 2000,
                      alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float, float]:
    """``seed_aware_compare`` of two ``score_matrix`` results on the problems both have."""
    (mat, ids), (bmat, bids) = group, base
    common = sorted(set(ids) & set(bids))
    return seed_aware_compare(mat[:, [ids.index(i) for i in common]], bmat[:, [bids.index(i) for i in common]],
                              n_boot=n_boot, alpha=alpha, seed=seed)

# ---- tables ----------------------------------------------------------------------------------------
def summarize(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One line per (method, task, setting): mean, CI, seeds, problems, NFE, latency."""
    df = df.copy()
    df["method_label"] = labels(df)
    out = []
    for (m, t, s), g in df.groupby(["method_label", "task", "setting"], sort=True):
        mat, ids = score_matrix(g)
        mean, lo, hi = bootstrap_ci(mat, n_boot=n_boot)
        out.append({"method": m, "task": t, "setting": s, "mean": mean, "lo": lo, "hi": hi, "seeds": len(g),
                    "problems": len(ids), "nfe": g["nfe_mean"].mean(), "tok_s": g["tokens_per_s"].mean(),
                    "steps": int(g["steps"].iloc[0]), "decoding": g["decoding"].iloc[0], "gen_length": int(g["gen_length"].iloc[0]),
                    **timing_summary(g)})
    return pd.DataFrame(out)


def timing_summary(g: pd.DataFrame) -> dict:
    """Latency of one (method, task, setting) group: medians over its rows (seeds) of the timing pass's median,
    quartiles and per-sample figure; ``timed`` False when a row lacks a timing pass (then ``ms`` is the
    accuracy pass's single-pass p50 and there is no dispersion)."""
    ts = list(g["timing"]) if "timing" in g else []
    if ts and all(t.get("request_ms") for t in ts):
        from .timing import median_rel_ci

        med = lambda f, k: float(np.median([t[f][k] for t in ts]))  # noqa: E731
        n_req = lambda t: t.get("requests") or t["reps"]  # noqa: E731 - pooled requests (older records: rounds)
        return {"timed": True, "ms": med("request_ms", "median"), "ms_q25": med("request_ms", "q25"),
                "ms_q75": med("request_ms", "q75"), "rel_iqr": max(t["request_ms"]["rel_iqr"] for t in ts),
                "rel_ci": max(median_rel_ci(t["request_ms"], n_req(t)) for t in ts),
                "sample_rel_ci": max(median_rel_ci(t["sample_ms"], t["reps"]) for t in ts),
                "ms_sample": med("sample_ms", "median"), "sample_rel_iqr": max(t["sample_ms"]["rel_iqr"] for t in ts),
                "timing_batch": int(ts[0]["batch_size"]), "reps": int(ts[0]["reps"]),
                "ms_per_nfe": float(np.median([t["ms_per_nfe"] or np.nan for t in ts]))}
    return {"timed": False, "ms": g["latency_ms_p50"].mean(), "ms_q25": np.nan, "ms_q75": np.nan, "rel_iqr": np.nan,
            "rel_ci": np.nan, "sample_rel_ci": np.nan,
            "ms_sample": np.nan, "sample_rel_iqr": np.nan, "timing_batch": np.nan, "reps": 0, "ms_per_nfe": np.nan}


def _fmt_cell(mean, lo, hi, bold, mark, fmt) -> str:
    txt = f"{100 * mean:.1f} ± {100 * max(mean - lo, hi - mean):.1f}{mark}"
    if bold:
        return {"markdown": f"**{txt}**", "latex": f"\\textbf{{{txt}}}"}.get(fmt, txt)
    return txt


def comparison_table(df: pd.DataFrame, paired_vs: str | None = None, alpha: float = 0.05, fmt: str = "markdown",
                     n_boot: int = 2000) -> pd.DataFrame:
    """Methods x (task, setting): "mean ± CI half-width" in percent; best per column in bold; a dagger
    where the difference to ``paired_vs`` is significant at ``alpha`` on the same problems, seeds resampled
    (``seed_aware_compare``)."""
    summ = summarize(df, n_boot=n_boot)
    df = df.copy()
    df["method_label"] = labels(df)
    base_of = resolve_method(df, paired_vs, "--paired-vs") if paired_vs is not None else {}
    table: dict[str, dict[str, str]] = {}
    cols: list[str] = []
    groups = sorted(summ.groupby(["task", "setting"]), key=lambda kv: (kv[0][0], setting_order(kv[0][1])))
    for (t, s), g in groups:
        col = f"{t} {s}"
        cols.append(col)
        best = g["mean"].max()
        base = None
        if paired_vs is not None:
            sel = df[(df.method_label == base_of.get(t)) & (df.task == t) & (df.setting == s)]
            base = score_matrix(sel) if len(sel) else None
        for _, r in g.iterrows():
            mark = ""
            if base is not None and r["method"] != base_of.get(t):
                group = score_matrix(df[(df.method_label == r["method"]) & (df.task == t) & (df.setting == s)])
                if compare_on_shared(group, base, n_boot=n_boot, alpha=alpha)[3] < alpha:
                    mark = "†"
            table.setdefault(r["method"], {})[col] = _fmt_cell(r["mean"], r["lo"], r["hi"], r["mean"] == best, mark, fmt)
    return pd.DataFrame(table).T.sort_index()[cols]


def holm(ps) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (in their order): the k-th smallest is multiplied by
    (m - k + 1), and the adjusted values are made non-decreasing in that order and capped at 1. A p-value whose
    adjusted value is below alpha is significant with the family-wise error rate at most alpha."""
    ps = np.asarray(ps, float)
    order = np.argsort(ps, kind="stable")
    adj = np.empty_like(ps)
    adj[order] = np.minimum(1.0, np.maximum.accumulate(ps[order] * (len(ps) - np.arange(len(ps)))))
    return adj


def vs_base(df: pd.DataFrame, base: str = "none", alpha: float = 0.05, n_boot: int = 2000) -> pd.DataFrame:
    """Every (task, setting, method) compared with ``base`` on the same problems, seeds resampled
    (``seed_aware_compare``): delta, its CI (lo, hi), the two-sided p, ``p_holm`` (Holm's adjustment over the
    task's family: every comparison with ``base`` on that task, each method at each setting, whichever way it
    went) and ``family`` (that family's size)."""
    df = df.copy()
    df["method_label"] = labels(df)
    base_of = resolve_method(df, base, "base")
    out = []
    for t, tg in df.groupby("task"):
        family = []
        for s, g in tg.groupby("setting"):
            sel = g[g.method_label == base_of.get(t)]
            if not len(sel):
                continue
            base_scores = score_matrix(sel)
            for m, mg in g[g.method_label != base_of.get(t)].groupby("method_label"):
                d, lo, hi, p = compare_on_shared(score_matrix(mg), base_scores, n_boot=n_boot, alpha=alpha)
                family.append({"task": t, "setting": s, "method": m, "delta": d, "lo": lo, "hi": hi, "p": p})
        out += [{**r, "p_holm": float(a), "family": len(family)} for r, a in zip(family, holm([r["p"] for r in family]))]
    return pd.DataFrame(out, columns=["task", "setting", "method", "delta", "lo", "hi", "p", "p_holm", "family"])


def above(df: pd.DataFrame | None, base: str = "none", alpha: float = 0.05, n_boot: int = 2000, correction: str | None = None,
          compared: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (task, setting, method) whose mean is significantly ABOVE ``base``'s (``vs_base``: a positive
    difference and p < ``alpha``): the rows a task needs at least one of to be a benchmark rather than a table
    of its start. Columns: task, setting, method, delta, lo, hi, p, p_adj, family.

    ``correction="holm"``: a row must have its Holm-adjusted p (``p_adj``) below ``alpha``. Without it ``p_adj``
    is ``p``: with 9 methods at 5 settings, about two rows of a task that nothing moved pass p < 0.05 by chance.
    ``compared``: a ``vs_base`` result to filter instead of comparing ``df`` again."""
    if correction not in (None, "holm"):
        raise UserError(f"unknown correction {correction!r}: use None (each comparison at alpha) or 'holm'")
    c = vs_base(df, base, alpha, n_boot) if compared is None else compared
    c = c.assign(p_adj=c["p_holm"] if correction == "holm" else c["p"])
    return c[(c.delta > 0) & (c.p_adj < alpha)].drop(columns="p_holm").reset_index(drop=True)


def delta_table(df: pd.DataFrame, base: str, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Each method label (e.g. an ablation variant ``lfpo[k=2]``) against ``base`` (e.g. ``lfpo``), per (task,
    setting): the accuracy difference in points with a 95% CI over the shared problems and both sides' seeds
    (``seed_aware_compare``), and a dagger where its test gives p < ``alpha``."""
    df = df.copy()
    df["method_label"] = labels(df)
    base_of = resolve_method(df, base, "--deltas-vs")  # a label, or a method name with one label per task
    table: dict[str, dict[str, str]] = {}
    cols = []
    for (t, s_), g in sorted(df.groupby(["task", "setting"]), key=lambda kv: (kv[0][0], setting_order(kv[0][1]))):
        col = f"{t} {s_}"
        b = g[g.method_label == base_of.get(t)]
        if b.empty:
            continue
        cols.append(col)
        base_scores = score_matrix(b)
        for label, gm in g.groupby("method_label"):
            if label == base_of.get(t):
                continue
            d, lo, hi, p = compare_on_shared(score_matrix(gm), base_scores, n_boot=n_boot, alpha=alpha, seed=seed)
            mark = "†" if p < alpha else ""
            table.setdefault(label, {})[col] = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"
    return pd.DataFrame(table).T.sort_index()[cols] if table else pd.DataFrame()


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per (task, setting, method): NFE, ms per request with IQR, ms per sample at the timing batch,
    ms per NFE, rounds; ``flag`` "≈ request" / "≈ batch" where that median's 95% interval is wider than
    ``timing.WIDE`` of it (it cannot be told from a figure 1.25x away), "1 pass"
    where there was no timing pass."""
    from .timing import WIDE

    summ = summarize(df, n_boot=200)
    lines = []
    order = sorted(range(len(summ)), key=lambda i: (summ["task"].iloc[i], setting_order(summ["setting"].iloc[i]), summ["method"].iloc[i]))
    for _, r in summ.iloc[order].iterrows():
        if r["timed"]:
            wide = " ".join(w for w, v in (("≈ request", r["rel_ci"]), ("≈ batch", r["sample_rel_ci"])) if v > WIDE)
            lines.append({"task": r["task"], "setting": r["setting"], "method": r["method"], "NFE": f"{r['nfe']:.2f}",
                          "ms/request": f"{r['ms']:.2f}", "IQR": f"{r['ms_q25']:.2f}-{r['ms_q75']:.2f}",
                          "ms/sample @batch": f"{r['ms_sample']:.3f} @{int(r['timing_batch'])}",
                          "ms/NFE": f"{r['ms_per_nfe']:.2f}", "rounds": int(r["reps"]), "flag": wide})
        else:
            lines.append({"task": r["task"], "setting": r["setting"], "method": r["method"], "NFE": f"{r['nfe']:.2f}",
                          "ms/request": f"{r['ms']:.2f}", "IQR": "", "ms/sample @batch": "", "ms/NFE": "", "rounds": 0,
                          "flag": "1 pass"})
    return pd.DataFrame(lines).set_index(["task", "setting", "method"])


COST = (("opt_steps", "opt steps"), ("rollout_forwards", "rollout fwd"), ("forwards", "train fwd"), ("backwards", "bwd"))


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per (task, method label) that trained: what each run cost (``config.budget``: optimiser steps,
    rollout forward passes, training forward and backward passes, counted over the whole run, so a method's μ
    shows here) and which update each seed's row is (``config.selected_update`` of ``last_update``). A count
    that differs between seeds reads "min-max". Empty when no row carries a budget (untrained or older rows)."""
    lines = []
    cfgs = df.assign(method_label=labels(df))
    for (t, m), g in sorted(cfgs.groupby(["task", "method_label"])):
        per_run = {}  # one entry per run (a run has a row per setting)
        for _, r in g.iterrows():
            c = r["config"] if isinstance(r.get("config"), dict) else {}
            if c.get("budget"):
                per_run[(r.get("run_id") or r["_source"], r["seed"])] = (r["seed"], r["stage"], c)
        if not per_run:
            continue
        runs = sorted(per_run.values(), key=lambda x: x[0])
        line = {"task": t, "method": m, "seeds": len(runs)}
        for key, name in COST:
            vals = [int(c["budget"].get(key, 0)) for _, _, c in runs]
            line[name] = f"{min(vals)}" if min(vals) == max(vals) else f"{min(vals)}-{max(vals)}"
        line["skipped updates"] = sum(int(c["budget"].get("skipped_updates", 0)) for _, _, c in runs)
        line["row's update / last"] = ", ".join(
            f"{c.get('last_update' if stage == 'last' else 'selected_update', '?')}/{c.get('last_update', '?')}"
            for _, stage, c in runs)
        lines.append(line)
    return pd.DataFrame(lines).set_index(["task", "method"]) if lines else pd.DataFrame()


def common_targets(df: pd.DataFrame) -> dict[str, float]:
    """Per task, the highest accuracy every method reaches at some setting (the least of the methods' best
    means): the equal-accuracy view's ``--target auto``, at which no method reads "not reached"."""
    summ = summarize(df, n_boot=10)
    return {t: float(g.groupby("method")["mean"].max().min()) for t, g in summ.groupby("task")}


def equal_accuracy(df: pd.DataFrame, target: float | dict[str, float], baseline: str | None = None) -> pd.DataFrame:
    """For each (task, method), among its decoding settings whose mean accuracy reaches ``target`` (a
    fraction, or one per task): the fewest mean NFE (and that setting), the fewest ms per request and the
    fewest ms per sample at the timing batch (each with its setting), and each one's ratio to ``baseline``'s."""
    summ = summarize(df, n_boot=200)
    rows = []
    for (t, m), g in summ.groupby(["task", "method"]):
        ok = g[g["mean"] >= (target[t] if isinstance(target, dict) else target) - 1e-12]
        row = {"task": t, "method": m}
        if len(ok):
            b = ok.sort_values(["nfe", "ms"]).iloc[0]
            row.update(setting=b["setting"], accuracy=b["mean"], nfe=b["nfe"])
            q = ok.sort_values(["ms", "nfe"]).iloc[0]
            row.update(ms_setting=q["setting"], ms=q["ms"])
            ps = ok.dropna(subset=["ms_sample"])
            if len(ps):
                p = ps.sort_values(["ms_sample", "nfe"]).iloc[0]
                row.update(sample_setting=p["setting"], ms_sample=p["ms_sample"])
            else:
                row.update(sample_setting="", ms_sample=np.nan)
        else:
            row.update(setting="not reached", accuracy=g["mean"].max(), nfe=np.nan, ms_setting="", ms=np.nan,
                       sample_setting="", ms_sample=np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    if baseline is not None and len(out):  # a label, or a method name with one label per task (a tuned method)
        lab = df.assign(method_label=labels(df))
        of = resolve_method(lab, baseline, "--baseline")
        base = out[out.apply(lambda r: of.get(r["task"]) == r["method"], axis=1)].set_index("task")
        for col in ("nfe", "ms", "ms_sample"):
            out[f"{col}_ratio"] = out[col] / out["task"].map(base[col]).astype(float)
    return out


def match_table(df: pd.DataFrame, baseline: str, n_boot: int = 2000, alpha: float = 0.05) -> pd.DataFrame:
    """The equal-accuracy claim, tested per method. For each (task, method) other than ``baseline``: the method's
    best fixed-step setting (highest mean; fewer steps on a tie), the fewest steps at which ``baseline``'s mean
    reaches that accuracy, the ratio of their mean NFE and ms per request, and the paired difference
    ``baseline@its setting - method@its best`` in points with a 95% CI and p (same problems, both sides' seeds
    resampled: ``compare_on_shared``). A ratio below 1 says the baseline matches the method in fewer steps; the
    CI's lower end says how much accuracy that could cost. "not reached" where the baseline never gets there.
    The step grid bounds the resolution: with steps 1/2/4/8/16 a ratio is a power of two."""
    df = df[df["decoding"] == "fixed"].copy()
    if df.empty:
        raise UserError("--target match compares fixed-step settings, and these rows have none")
    df["method_label"] = labels(df)
    base_of = resolve_method(df, baseline, "--baseline")
    summ = summarize(df, n_boot=200)
    rows = []
    for t, st in summ.groupby("task"):
        b = base_of.get(t)
        bs = st[st["method"] == b]
        if bs.empty:
            continue
        for m, g in st[st["method"] != b].groupby("method"):
            best = g.sort_values(["mean", "steps"], ascending=[False, True]).iloc[0]
            row = {"task": t, "method": m, "its best": f"{100 * best['mean']:.1f} @ {best['steps']} steps"}
            ok = bs[bs["mean"] >= best["mean"] - 1e-12].sort_values("steps")
            if ok.empty:
                top = bs.sort_values("mean").iloc[-1]
                row.update({"baseline reaches it": f"not reached (best {100 * top['mean']:.1f} @ {top['steps']})",
                            "NFE ratio": np.nan, "ms ratio": np.nan, "difference": ""})
            else:
                hit = ok.iloc[0]
                A = score_matrix(df[(df.task == t) & (df.method_label == b) & (df.setting == hit["setting"])])
                B = score_matrix(df[(df.task == t) & (df.method_label == m) & (df.setting == best["setting"])])
                d, lo, hi, p = compare_on_shared(A, B, n_boot=n_boot, alpha=alpha)
                row.update({"baseline reaches it": f"{100 * hit['mean']:.1f} @ {hit['steps']} steps",
                            "NFE ratio": hit["nfe"] / best["nfe"], "ms ratio": hit["ms"] / best["ms"],
                            "difference": f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] p={p:.3g}"})
            rows.append(row)
    if not rows:
        raise UserError(f"--baseline {baseline}: no other method shares a task with it")
    return pd.DataFrame(rows)[["task", "method", "its best", "baseline reaches it", "NFE ratio", "ms ratio", "difference"]]


def check_provenance(df: pd.DataFrame, allow_mixed: bool = False) -> list[str]:
    """Problems with mixing; raises ``UserError`` unless ``allow_mixed``."""
    problems = []
    shas = sorted(set(df["git_sha"]))
    if len(shas) > 1:
        problems.append(f"rows come from {len(shas)} code versions: {', '.join(shas)}")
    for t, g in df.groupby("task"):
        hashes = set(g["dataset_sha256"])
        if len(hashes) > 1:
            problems.append(f"task {t}: rows use {len(hashes)} different datasets")
    if problems and not allow_mixed:
        raise UserError("; ".join(problems) + " (rerun, or pass --allow-mixed to report them together)")
    return problems


def footer(df: pd.DataFrame, sources: list[str]) -> str:
    shas = ", ".join(sorted(set(df["git_sha"])))
    probs = ", ".join(f"{t}: {n}" for t, n in df.groupby("task")["n"].max().items())
    seeds = len(set(df["seed"]))
    return f"code {shas}; problems {probs}; seeds {seeds}; from {', '.join(sources)}"


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv()
    if fmt == "latex":
        return table.to_latex(escape=False)
    return table.to_markdown() if _has_tabulate() else _markdown(table)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


def _markdown(t: pd.DataFrame) -> str:
    cols = [str(c) for c in t.columns]
    lines = ["| " + " | ".join([t.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in t.iterrows():
        lines.append("| " + " | ".join([str(idx)] + ["" if pd.isna(v) else str(v) for v in row]) + " |")
    return "\n".join(lines)
