"""Does the latency column survive a busy machine? The same checkpoint under two names in one sweep, while
CPU-burning processes run; prints, per decoding setting, the two names' latency by the timing pass
(median [IQR] over interleaved rounds) and by the accuracy pass (one pass, p50), and the ratio of the two
names for each. Identical work should read identical: a ratio near 1.00.

    python bench/latency_noise.py [--burners 1] [--reps 9] [--limit 64]

Runs in a temporary folder (a fresh sweep each time); about 3-5 minutes on 2 cores with one burner.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 1103515245 + 12345) % 2**31


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burners", type=int, default=1, help="CPU-burning processes during the sweep")
    ap.add_argument("--reps", type=int, default=9, help="timing rounds")
    ap.add_argument("--limit", type=int, default=64, help="test problems in the accuracy pass")
    ap.add_argument("--task", default="sudoku4")
    args = ap.parse_args()

    import yaml

    from lfpo_bench.config import make_task
    from lfpo_bench.models.loader import load_model, save_model
    from lfpo_bench.report import load_rows, setting_order
    from lfpo_bench.sweep import sweep

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lm = load_model("tiny", task=make_task(args.task), quiet=True)
        names = {}
        for name in ("name-a", "name-b"):
            save_model(lm, str(tmp / name))
            names[str(tmp / name)] = name
        spec = {"name": "latency-noise", "methods": ["none"], "tasks": [args.task], "models": list(names), "seeds": [0],
                "eval": {"steps": [1, 4, 16], "thresholds": [0.9], "limit": args.limit, "batch_size": 32},
                "timing": {"reps": args.reps, "warmup": 1, "prompts": 8, "batch_size": 32}}
        (tmp / "sweep.yaml").write_text(yaml.safe_dump(spec))
        burners = [mp.Process(target=burn, args=(time.time() + 3600,), daemon=True) for _ in range(args.burners)]
        for b in burners:
            b.start()
        t0 = time.time()
        try:
            sweep(str(tmp / "sweep.yaml"), out=str(tmp / "out"), show_progress=False)
        finally:
            for b in burners:
                b.terminate()
        secs = time.time() - t0
        df = load_rows([tmp / "out"])
    df["name"] = df["model"].map(lambda m: names.get(m, m))
    print(f"{args.task}, {args.limit} problems, {args.burners} CPU burner(s), {os.cpu_count()} cores, {secs:.0f} s; "
          f"timing pass: {args.reps} interleaved rounds, 8 requests at batch 1")
    hdr = ("setting", "timing a ms/req [IQR]", "timing b ms/req [IQR]", "ratio", "1-pass a p50", "1-pass b p50", "ratio")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    worst_t, worst_1 = 1.0, 1.0
    for setting, g in sorted(df.groupby("setting"), key=lambda kv: setting_order(kv[0])):
        a = g[g.name == "name-a"].iloc[0]
        b = g[g.name == "name-b"].iloc[0]
        ta, tb = a["timing"]["request_ms"], b["timing"]["request_ms"]
        rt = ta["median"] / tb["median"]
        r1 = a["latency_ms_p50"] / b["latency_ms_p50"]
        worst_t, worst_1 = max(worst_t, rt, 1 / rt), max(worst_1, r1, 1 / r1)
        print(f"| {setting} | {ta['median']:.2f} [{ta['q25']:.2f}-{ta['q75']:.2f}] | {tb['median']:.2f} "
              f"[{tb['q25']:.2f}-{tb['q75']:.2f}] | {rt:.2f}x | {a['latency_ms_p50']:.2f} | {b['latency_ms_p50']:.2f} | {r1:.2f}x |")
    print(f"worst ratio between the two names: timing pass {worst_t:.2f}x, accuracy pass {worst_1:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
