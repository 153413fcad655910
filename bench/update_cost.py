"""Cost of one update for every method, on the tiny model (sudoku4 preset), measured in one run.

For each method: forward and backward passes per update, in per-sample forward-equivalents (rows through
the model / rollout samples; a pass over 3N rows counts 3), the seconds of the optimisation part of an
update (rollout generation and scoring excluded: they are the same for every method) and of the whole
update, and the ratio of optimisation time to LFPO's. Method defaults come from the task preset, as
`lfpo-bench run` uses them (e.g. diffu-GRPO's mu = 8 on Sudoku).

Usage: python bench/update_cost.py [--updates 3] [--task sudoku4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from lfpo_bench.models.loader import load_model
from lfpo_bench.registry import METHODS
from lfpo_bench.train_job import RunArgs, resolve
from lfpo_bench.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--task", default="sudoku4")
    args = ap.parse_args()
    rows = []
    for name in METHODS.names():
        r = resolve(RunArgs(method=name, task=args.task, updates=args.updates + 1))
        if not getattr(r.method, "trains", True):
            continue
        lm = load_model(r.model, task=r.task, quiet=True)
        with tempfile.TemporaryDirectory() as d:
            t = Trainer(lm, r.task, r.method, r.train, d, show_progress=False)
            entries = [t.step(u) for u in range(args.updates + 1)][1:]  # first update warms up
        n = r.train.prompts_per_update * (r.train.group_size if r.method.needs_rollouts else 1)
        rows.append({
            "method": name, "mu": r.method.mu,
            "fwd": statistics.mean(e["fwd_rows"] for e in entries) / n, "bwd": statistics.mean(e["bwd_rows"] for e in entries) / n,
            "opt_s": statistics.mean(e["update_s"] for e in entries), "total_s": statistics.mean(e["seconds"] for e in entries),
        })
    ref = next((x["opt_s"] for x in rows if x["method"] == "lfpo"), None)
    print(f"{args.task}, tiny model, {r.train.prompts_per_update} prompts x G={r.train.group_size} per update, "
          f"mean of {args.updates} updates")
    print(f"{'method':14} {'mu':>3} {'fwd/sample':>10} {'bwd/sample':>10} {'opt s':>7} {'update s':>8} {'opt vs lfpo':>11}")
    for x in rows:
        ratio = f"{x['opt_s'] / ref:.2f}x" if ref else "-"
        print(f"{x['method']:14} {x['mu']:>3} {x['fwd']:>10.2f} {x['bwd']:>10.2f} {x['opt_s']:>7.3f} {x['total_s']:>8.3f} {ratio:>11}")
    print("fwd/bwd count the optimisation passes only (old/ref/current); rollout generation is the same for every method")


if __name__ == "__main__":
    main()
