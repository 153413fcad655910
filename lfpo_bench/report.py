"""Reporting: pure pandas functions of results rows (no model, no I/O besides reading rows).

- ``comparison_table``: methods x (task, setting), accuracy with a 95% bootstrap CI over problems and
  seeds; best per column in bold; ``paired_vs`` marks differences significant under a paired bootstrap
  over the same problems (or an exact McNemar test when scores are 0/1);
- ``latency_table``: mean NFE, p50 latency and tokens/s per method and setting;
- ``equal_accuracy``: per method, the fewest mean NFE (and ms) among its decoding settings that reach a
  target accuracy, and the ratio to a baseline method: the test of "fewer steps at equal accuracy";
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
    trained-and-evaluated rows ("after"; plain ``eval`` rows are kept too). ``metric``: "accuracy" (the
    task score) or one of the task's extra metrics (e.g. "solved"), which then becomes ``scores``."""
    recs = []
    for p in paths:
        p = Path(p)
        files = [p / "rows.jsonl"] if p.is_dir() else [p]
        for f in files:
            if not f.exists():
                raise UserError(f"no results at {f}")
            for r in read_rows(f):
                r["_source"] = str(f)
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
    key = ["run_id", "stage", "method", "task", "split", "gen_length", "block_length", "steps", "decoding", "seed"]
    if "run_id" in df and df["run_id"].astype(bool).any():
        dup = df.duplicated(subset=[k for k in key if k in df], keep="first") & df["run_id"].astype(bool)
        if dup.any():  # e.g. a sweep folder and its runs/ both given: count each row once
            log.warning("ignoring %d duplicate rows (same run, stage and setting)", int(dup.sum()))
            df = df[~dup]
    if stage is not None and "stage" in df:
        df = df[df["stage"].isin([stage, "eval"])]
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
    cfg = r.get("method_cfg") if isinstance(r.get("method_cfg"), dict) else {}
    return r["method"] + ("[" + ",".join(f"{k}={v}" for k, v in sorted(cfg.items())) + "]" if cfg else "")


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


# ---- tables ----------------------------------------------------------------------------------------
def summarize(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One line per (method, task, setting): mean, CI, seeds, problems, NFE, latency."""
    df = df.copy()
    df["method_label"] = df.apply(method_label, axis=1)
    out = []
    for (m, t, s), g in df.groupby(["method_label", "task", "setting"], sort=True):
        mat, ids = score_matrix(g)
        mean, lo, hi = bootstrap_ci(mat, n_boot=n_boot)
        out.append({"method": m, "task": t, "setting": s, "mean": mean, "lo": lo, "hi": hi, "seeds": len(g),
                    "problems": len(ids), "nfe": g["nfe_mean"].mean(), "ms": g["latency_ms_p50"].mean(),
                    "tok_s": g["tokens_per_s"].mean(), "steps": int(g["steps"].iloc[0]), "decoding": g["decoding"].iloc[0]})
    return pd.DataFrame(out)


def _fmt_cell(mean, lo, hi, bold, mark, fmt) -> str:
    txt = f"{100 * mean:.1f} ± {100 * max(mean - lo, hi - mean):.1f}{mark}"
    if bold:
        return {"markdown": f"**{txt}**", "latex": f"\\textbf{{{txt}}}"}.get(fmt, txt)
    return txt


def comparison_table(df: pd.DataFrame, paired_vs: str | None = None, alpha: float = 0.05, fmt: str = "markdown",
                     n_boot: int = 2000) -> pd.DataFrame:
    """Methods x (task, setting): "mean ± CI half-width" in percent; best per column in bold; a dagger
    where the difference to ``paired_vs`` is significant at ``alpha`` on the same problems."""
    summ = summarize(df, n_boot=n_boot)
    df = df.copy()
    df["method_label"] = df.apply(method_label, axis=1)
    table: dict[str, dict[str, str]] = {}
    cols: list[str] = []
    groups = sorted(summ.groupby(["task", "setting"]), key=lambda kv: (kv[0][0], setting_order(kv[0][1])))
    for (t, s), g in groups:
        col = f"{t} {s}"
        cols.append(col)
        best = g["mean"].max()
        base = None
        if paired_vs is not None:
            sel = df[(df.method_label == paired_vs) & (df.task == t) & (df.setting == s)]
            base = score_matrix(sel) if len(sel) else None
        for _, r in g.iterrows():
            mark = ""
            if base is not None and r["method"] != paired_vs:
                mat, ids = score_matrix(df[(df.method_label == r["method"]) & (df.task == t) & (df.setting == s)])
                bmat, bids = base
                common = sorted(set(ids) & set(bids))
                a = mat[:, [ids.index(i) for i in common]].mean(0)
                b = bmat[:, [bids.index(i) for i in common]].mean(0)
                if paired_p(a, b) < alpha:
                    mark = "†"
            table.setdefault(r["method"], {})[col] = _fmt_cell(r["mean"], r["lo"], r["hi"], r["mean"] == best, mark, fmt)
    return pd.DataFrame(table).T.sort_index()[cols]


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    summ = summarize(df, n_boot=200)
    summ["cell"] = summ.apply(lambda r: f"{r['nfe']:.1f} / {r['ms']:.2f} ms / {r['tok_s']:.0f}", axis=1)
    summ["col"] = summ["task"] + " " + summ["setting"]
    t = summ.pivot_table(index="method", columns="col", values="cell", aggfunc="first")
    order = sorted(t.columns, key=lambda c: (c.split(" ")[0], setting_order(c.split(" ", 1)[1])))
    return t[order]


def equal_accuracy(df: pd.DataFrame, target: float, baseline: str | None = None) -> pd.DataFrame:
    """For each (task, method): the decoding setting with the fewest mean NFE whose mean accuracy reaches
    ``target`` (a fraction), its ms per sample, and the NFE ratio to ``baseline``'s setting."""
    summ = summarize(df, n_boot=200)
    rows = []
    for (t, m), g in summ.groupby(["task", "method"]):
        ok = g[g["mean"] >= target]
        if len(ok):
            b = ok.sort_values(["nfe", "ms"]).iloc[0]
            rows.append({"task": t, "method": m, "setting": b["setting"], "accuracy": b["mean"], "nfe": b["nfe"], "ms": b["ms"]})
        else:
            rows.append({"task": t, "method": m, "setting": "not reached", "accuracy": g["mean"].max(), "nfe": np.nan, "ms": np.nan})
    out = pd.DataFrame(rows)
    if baseline is not None and len(out):
        base = out[out.method == baseline].set_index("task")["nfe"]
        out["nfe_ratio"] = out.apply(lambda r: r["nfe"] / base.get(r["task"], np.nan), axis=1)
    return out


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
