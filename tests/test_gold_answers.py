"""Every gold answer of every real task, written as a model would, scores 1; perturbed answers score 0.

Slow tier (``pytest -m slow tests/test_gold_answers.py``): reads ../shared/data. Each task's gold is
rendered in at least two model-style formats; near misses (another value, a broken program) must fail.
"""

import itertools
import re
from fractions import Fraction

import pytest

from lfpo_bench.answers import numeric_value
from lfpo_bench.config import make_task as get_task

pytestmark = pytest.mark.slow


def _task(name, shared_data, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))
    return get_task(name)


def _latex_thousands(v: str) -> str:
    n = numeric_value(v)
    if n.denominator != 1 or abs(n) < 1000:
        return v
    return re.sub(r"(?<=\d)(?=(\d{3})+$)", "{,}", str(n))


def test_gsm8k_gold_in_every_format(shared_data, monkeypatch):
    t = _task("gsm8k", shared_data, monkeypatch)
    exs = t.load("test")
    forms = [
        lambda g: f"Step by step... so the answer is \\boxed{{{g}}}.",
        lambda g: f"<answer></answer>\nWe compute. <answer>{g}</answer>",
        lambda g: f"The total is \\boxed{{{_latex_thousands(g)}}}",
        lambda g: f"Hence $\\boxed{{\\text{{{g} }}}}$",
        lambda g: f"Thus x = {g}. The answer is {g}.",
    ]
    for f in forms:
        assert [t.score(e, f(e.answer["gold"])) for e in exs] == [1.0] * len(exs)
    gold = [numeric_value(e.answer["gold"]) for e in exs]
    assert None not in gold
    wrong = [t.score(e, f"\\boxed{{{g + 1}}}") for e, g in zip(exs, gold)]
    assert sum(wrong) == 0
    halves = [t.score(e, f"\\boxed{{\\frac{{{g}}}{{2}}}}") for e, g in zip(exs, gold)]
    assert sum(halves) == sum(g == 0 for g in gold)


def test_math500_gold_in_two_formats(shared_data, monkeypatch):
    t = _task("math500", shared_data, monkeypatch)
    exs = t.load("test")
    for fmt in ("The answer is $\\boxed{{{}}}$.", "<answer></answer> so \\boxed{{{}}}"):
        got = [s.score for s in t.score_batch(exs, [fmt.format(e.answer["gold"]) for e in exs])]
        assert sum(got) == len(exs), [e.answer["gold"] for e, g in zip(exs, got) if g < 1][:10]


def _solve_countdown(nums, target):
    for a, b, c in itertools.permutations(nums):
        for o1, o2 in itertools.product("+-*/", repeat=2):
            for expr in (f"({a} {o1} {b}) {o2} {c}", f"{a} {o1} ({b} {o2} {c})"):
                try:
                    if Fraction(eval(expr.replace("/", "*Fraction(1)/"))) == target:  # noqa: S307 - our own digits
                        return expr
                except ZeroDivisionError:
                    continue
    return None


def test_countdown_solutions_in_two_formats(shared_data, monkeypatch):
    t = _task("countdown", shared_data, monkeypatch)
    exs = t.load("test")
    for e in exs:
        expr = _solve_countdown(e.answer["numbers"], e.answer["target"])
        assert expr is not None, e
        assert t.score(e, f"<answer>{expr}</answer>") == 1.0
        latex = expr.replace("*", "\\times ")
        assert t.score(e, f"<answer></answer> ... \\boxed{{{latex} = {e.answer['target']}}}") == 1.0
        assert t.score(e, f"<answer>{expr} + 1</answer>") == 0.0


@pytest.mark.parametrize("split", ["test", "test_d1"])
def test_sudoku_gold_in_two_formats(shared_data, monkeypatch, split):
    t = _task("sudoku", shared_data, monkeypatch)
    for e in t.load(split):
        rows = "\n".join(e.answer[i:i + 4] for i in range(0, 16, 4))
        assert t.score(e, f"<answer>\n{rows}\n</answer>") == 1.0
        assert t.score(e, f"<answer></answer> grid: \\boxed{{{e.answer}}}") == 1.0
        blank = e.question.index("0")
        bad = e.answer[:blank] + str(int(e.answer[blank]) % 4 + 1) + e.answer[blank + 1:]
        assert t.score(e, f"<answer>{bad}</answer>") < 1.0


@pytest.mark.parametrize("name", ["humaneval", "humaneval_plus", "mbpp", "mbpp_plus"])
def test_code_gold_in_two_formats_and_mutants_fail(shared_data, monkeypatch, name):
    t = _task(name, shared_data, monkeypatch)
    exs = t.load("test")
    refs = [t.reference_program(e) for e in exs]
    fenced = [f"Here is the solution:\n```python\n{r}\n```\nIt works." for r in refs]
    bare = [r if name.startswith("mbpp") else r for r in refs]
    for comps in (fenced, bare):
        got = [s.score for s in t.score_batch(exs, comps)]
        assert sum(got) == len(exs), [e.id for e, g in zip(exs, got) if g < 1][:10]
    # mutant: every return gives None -> must fail everywhere a test checks a value
    nones = [re.sub(r"(?m)^(\s*)return\b.*$", r"\1return None", r) for r in refs]
    mutants = [f"```python\n{m}\n```" for m in nones]
    got = [s.score for s in t.score_batch(exs, mutants)]
    assert sum(got) <= 0.02 * len(exs), [e.id for e, g in zip(exs, got) if g > 0]
