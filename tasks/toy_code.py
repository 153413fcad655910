"""toy-code: write a one-line Python expression in ``x`` that matches input/output examples.

The prompt shows f(0), f(1), f(2), f(3); the answer is an expression such as ``3*x+5``. The program
``def f(x): return <expr>`` runs in the sandbox on six hidden inputs; the score is the fraction of hidden
inputs it gets right (a timeout or crash scores 0). Synthetic and small enough for the tiny model.

The function space: linear ``a*x+b`` (a -9..9 but 0, b -99..99), ``x*x+b`` (b -99..99), ``x//c`` and ``x%c``,
one expression per distinct f(0..3) (the shortest), 3786 functions, so every prompt has one answer. It is split by
function: validation's 300 and test's 1000 functions never appear in training (which draws from the other
2486), and each held-out function is asked once (a split that repeated a function would count one answer
several times and overstate its precision). The space was 1226 functions (a 1..9, b -60..60) with 200 + 400
held out until 2026-12-07: the tiny model then nearly memorised its ~620 training functions, RL on them moved
held-out accuracy by about 3 points, and 400 test problems could not tell that from the start (issue 28).
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
B_RANGE = range(-99, 100)  # constants: every expression fits the 8-character canvas ("-9*x-99" is 7)
SPLITS = {"validation": (0, 300), "test": (300, 1300)}  # held-out functions; training gets the rest


def _linear(a: int, b: int) -> str:
    head = {1: "x", -1: "-x"}.get(a, f"{a}*x")
    return head if b == 0 else f"{head}{b:+d}"


def functions() -> list[str]:
    """Every function of the task, one expression per distinct f(0..3): the shortest (then the first in
    order) of those that show the same values, so no prompt has two right answers that differ on the
    hidden inputs."""
    cands = [_linear(a, b) for a in [*range(-9, 0), *range(1, 10)] for b in B_RANGE]
    cands += ["x*x" if b == 0 else f"x*x{b:+d}" for b in B_RANGE]
    cands += [f"x{op}{c}" for op in ("//", "%") for c in range(2, 10)]
    by_shown: dict[tuple, str] = {}
    for e in sorted(cands, key=lambda e: (len(e), e)):
        by_shown.setdefault(tuple(apply(e, x) for x in SHOWN), e)
    return sorted(by_shown.values())


def apply(expr: str, x: int) -> int:
    return eval(expr, {"__builtins__": {}}, {"x": x})  # noqa: S307 - only our own generated templates


@TASKS.register("toy-code")
class ToyCode(CodeTask):
    description = "one-line Python expression in x from 4 examples; scored on 6 hidden inputs in the sandbox"
    source = "generated; 300 validation and 1000 test functions, each once, never in training"
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
        if split in SPLITS:  # each held-out function once, in the shuffled order
            lo, hi = SPLITS[split]
            picked = fns[lo:hi]
        else:  # training: 20,000 draws from the other functions
            pool = fns[max(hi for _, hi in SPLITS.values()):]
            rng = random.Random(1)
            picked = [rng.choice(pool) for _ in range(20000)]
        out = []
        for i, expr in enumerate(picked):
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
