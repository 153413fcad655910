"""Figures from results rows (matplotlib, PNG and SVG): accuracy vs steps and accuracy vs NFE/latency with
CI bands and the Pareto front, and training curves from run logs. Every figure carries a provenance
footer (code version, problems, seeds, source)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .report import footer, summarize
from .types import UserError


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError("plotting needs matplotlib: pip install 'lfpo-bench[plot]'") from e
    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower cost x, higher accuracy y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def accuracy_plots(df: pd.DataFrame, out: str | Path, sources: list[str], x: str = "nfe") -> list[Path]:
    """Per task: accuracy vs steps (fixed decoding, CI band; threshold decoding as markers at their mean
    NFE) and accuracy vs ``x`` ("nfe" or "ms") with each method's Pareto front."""
    plt = _plt()
    summ = summarize(df, n_boot=500)
    note = footer(df, sources)
    written = []
    for task, g in summ.groupby("task"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, (m, gm) in enumerate(sorted(g.groupby("method"), key=lambda kv: kv[0])):
            color = f"C{i}"
            fixed = gm[gm.decoding == "fixed"].sort_values("steps")
            axes[0].plot(fixed["steps"], 100 * fixed["mean"], "o-", color=color, label=m)
            axes[0].fill_between(fixed["steps"], 100 * fixed["lo"], 100 * fixed["hi"], color=color, alpha=0.15)
            thr = gm[gm.decoding != "fixed"]
            axes[0].scatter(thr["nfe"], 100 * thr["mean"], marker="*", s=120, color=color, edgecolor="k")
            pts = list(zip(gm[x], gm["mean"]))
            axes[1].scatter(gm[x], 100 * gm["mean"], color=color, label=m, alpha=0.7)
            axes[1].errorbar(gm[x], 100 * gm["mean"], yerr=[100 * (gm["mean"] - gm["lo"]), 100 * (gm["hi"] - gm["mean"])],
                             fmt="none", color=color, alpha=0.4)
            front = [pts[j] for j in pareto_front(pts)]
            axes[1].plot([p[0] for p in front], [100 * p[1] for p in front], "-", color=color, alpha=0.8)
        axes[0].set(xscale="log", xlabel="denoising steps (stars: threshold decoding at its mean NFE)", ylabel="accuracy (%)",
                    title=f"{task}: accuracy vs steps (95% CI)")
        axes[1].set(xscale="log", xlabel="mean NFE" if x == "nfe" else ("ms per request (timing-pass median)" if summ["timed"].all() else "ms per sample (accuracy pass, one pass)"), ylabel="accuracy (%)",
                    title=f"{task}: accuracy vs {'NFE' if x == 'nfe' else 'latency'} (lines: Pareto fronts)")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.text(0.01, -0.04, note, fontsize=7, ha="left")
        written += _save(fig, Path(out), f"{task}-accuracy")
        plt.close(fig)
    return written


def training_curves(run_dirs: list[str | Path], out: str | Path) -> list[Path]:
    """Reward and validation accuracy over updates: colour = method, line style = seed."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    runs = []
    for d in map(Path, run_dirs):
        if (d / "log.jsonl").exists():
            cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
            runs.append((str(cfg.get("method", d.name)), cfg.get("seed", 0), d))
    methods = sorted({m for m, _, _ in runs})
    styles = ["-", "--", ":", "-."]
    for m, seed, d in sorted(runs, key=lambda x: (x[0], str(x[1]))):
        entries = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines() if line.strip()]
        color, ls = f"C{methods.index(m) % 10}", styles[int(seed) % len(styles)] if str(seed).isdigit() else "-"
        label = f"{m} s{seed}"
        r = [(e["update"], e["reward_mean"]) for e in entries if "reward_mean" in e]
        v = [(e["update"] + (1 if "reward_mean" in e else 0), e["val_acc"]) for e in entries if "val_acc" in e]
        if r:
            axes[0].plot(*zip(*r), ls, color=color, alpha=0.7, label=label)
        if v:
            axes[1].plot(*zip(*[(u, 100 * a) for u, a in v]), "o" + ls, color=color, alpha=0.8, label=label)
    axes[0].set(xlabel="update", ylabel="mean rollout reward", title="reward")
    axes[1].set(xlabel="update", ylabel="validation accuracy (%)", title="validation (greedy)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    paths = _save(fig, Path(out), "training-curves")
    plt.close(fig)
    return paths
