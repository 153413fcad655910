"""Do identical weights at identical settings read identical latency? Groups a results folder's rows by
(task, setting, weights), where the weights are "start" for the starting policy and for any run that kept
its starting checkpoint (selected update 0), else the run's checkpoint, and prints each group's spread of
latency medians: the timing pass's median per request when rows have one, else the accuracy pass's
single-pass p50 (older rows).

    python bench/latency_groups.py results/reference/untuned-sudoku4

The issue-15 target: every group within 1.25x.
"""

from __future__ import annotations

import sys


def main(path: str) -> float:
    from lfpo_bench.report import load_rows

    df = load_rows([path])
    timed = all(bool(t.get("request_ms")) for t in df["timing"])
    df["ms"] = [t["request_ms"]["median"] for t in df["timing"]] if timed else df["latency_ms_p50"]
    df["weights"] = [("start" if r["method"] == "none" or (r.get("config") or {}).get("selected_update") == 0 else r["checkpoint"])
                     for _, r in df.iterrows()]
    print(f"{path}: latency = {'timing-pass median per request' if timed else 'accuracy-pass p50 (one pass)'}")
    print("| setting | weights | rows | min ms | max ms | max/min |\n|---|---|---|---|---|---|")
    worst = 1.0
    for (task, setting, w), g in sorted(df.groupby(["task", "setting", "weights"]), key=lambda kv: kv[0][:2]):
        if len(g) < 2:
            continue
        lo, hi = g["ms"].min(), g["ms"].max()
        worst = max(worst, hi / lo)
        who = "start (" + ", ".join(sorted(f"{m} s{s}" for m, s in zip(g["method"], g["seed"]))) + ")" if w == "start" else w
        print(f"| {task} {setting} | {who} | {len(g)} | {lo:.2f} | {hi:.2f} | {hi / lo:.2f}x |")
    print(f"worst spread within a group of identical weights: {worst:.2f}x (target <= 1.25x)")
    return worst


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/reference/untuned-sudoku4")
