"""toy-code: write a one-line Python expression in ``x`` that matches input/output examples.

The prompt shows f(0), f(1), f(2), f(3); the answer is an expression such as ``3*x+5``. The program
``def f(x): return <expr>`` runs in the sandbox on six hidden inputs; the score is the fraction of hidden
inputs it gets right (a timeout or crash scores 0). Synthetic and small enough for the tiny model; the
function space (template x constants) is split so validation/test functions never appear in training.
"""

from __future__ import annotations

import random

from lfpo_bench.code_task import CodeTask
from lfpo_bench.registry import TASKS
from lfpo_bench.sandbox import Job, Session
from lfpo_bench.task import Scored
from lfpo_bench.types import Example

SHOWN = (0, 1, 2, 3)
HIDDEN = (4, 5, 7, 10, -1, -3)
TEMPLATES = ["x+{a}", "x-{a}", "{a}*x", "{a}*x+{b}", "{a}*x-{b}", "x*x", "x*x+{a}", "x*x-{a}", "x//{c}", "x%{c}", "(x+{a})*{b}"]


def functions() -> list[str]:
    out = set()
    for t in TEMPLATES:
        for a in range(1, 10):
            for b in range(1, 10):
                for c in range(2, 6):
                    out.add(t.format(a=a, b=b, c=c))
    return sorted(out)


def apply(expr: str, x: int) -> int:
    return eval(expr, {"__builtins__": {}}, {"x": x})  # noqa: S307 - only our own generated templates


@TASKS.register("toy-code")
class ToyCode(CodeTask):
    description = "one-line Python expression in x from 4 examples; scored on 6 hidden inputs in the sandbox"
    source = "generated; held-out functions for validation/test"
    synthetic = True
    tiny_pretrain = "toy-code"
    gen_length = 8
    steps = 8
    block_length = 8
    eval_steps = (1, 2, 4, 8)
    timeout_floor = 2.0
    rollout_steps = 4  # RL rollouts at half the canvas

    def _load(self, split: str) -> list[Example]:
        fns = functions()
        random.Random(11).shuffle(fns)
        k = len(fns) // 10
        pool = {"validation": fns[:k], "test": fns[k : 2 * k]}.get(split) or fns[2 * k :]
        rng = random.Random({"train": 1, "validation": 2, "test": 3}[split])
        n = {"train": 20000, "validation": 200, "test": 400}[split]
        out = []
        for i in range(n):
            expr = rng.choice(pool)
            shown = ";".join(f"f({x})={apply(expr, x)}" for x in SHOWN)
            out.append(Example(f"{split}/{i}", shown, {"expr": expr, "hidden": [[x, apply(expr, x)] for x in HIDDEN]}, {"split": split}))
        return out

    def instructed(self, ex: Example) -> str:
        return f"Write a Python expression in x for the function with {ex.question}. Answer with the expression only."

    def extract(self, completion: str) -> str:
        return completion.strip().split("\n")[0].strip().strip("`")

    def program(self, ex: Example, completion: str) -> str:
        return f"def f(x):\n    return {self.extract(completion)}\n"

    def reference_program(self, ex: Example) -> str:
        return f"def f(x):\n    return {ex.answer['expr']}\n"

    def timeout_for(self, ex: Example) -> float:
        return self.timeout_floor  # every program is a one-liner

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        hidden = ex.answer["hidden"]

        def check(s: Session) -> float:
            s.start()
            f = s.function("f")
            n = 0
            for x, y in hidden:
                try:
                    n += f(x) == y
                except Exception:  # noqa: BLE001 - a wrong call scores 0 for that input
                    pass
            return n / len(hidden)

        return Job(program, check, timeout)

    def scored(self, r) -> Scored:
        frac = float(r.value) if r.passed else 0.0
        return Scored(frac, {"solved": float(frac == 1.0)})

    def sft_target(self, ex: Example) -> str:
        return ex.answer["expr"]
