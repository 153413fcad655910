"""Where the final answer is and what number it names: one rule for every task (``lfpo_bench.answers``)."""

from fractions import Fraction

import pytest

from lfpo_bench.answers import final_answer, last_block, last_boxed, numeric_value
from lfpo_bench.types import Example

# (model-style output, value): LaTeX separators, units, currency, equations, fractions, Unicode
GSM8K_FORMS = [
    ("so the total is \\boxed{70{,}000}.", 70000),
    ("\\boxed{1\\,450\\,000}", 1450000),
    ("\\boxed{1\\!,\\!450}", 1450),
    ("The answer is $\\boxed{\\$1{,}200}$", 1200),
    ("\\boxed{\\dfrac{144}{2}}", 72),
    ("\\boxed{\\tfrac{3}{4}}", Fraction(3, 4)),
    ("\\boxed{-\\frac{3}{4}}", Fraction(-3, 4)),
    ("\\boxed{72 + 1 = 73}", 73),
    ("\\boxed{x = 18}", 18),
    ("\\boxed{18 \\text{ dollars}}", 18),
    ("\\boxed{\\text{18 apples}}", 18),
    ("\\boxed{50\\%}", 50),
    ("\\boxed{3 \\times 4}", 12),
    ("\\boxed{2^{3}}", 8),
    ("\\boxed{12.50}", Fraction(25, 2)),
    ("\\boxed{1,234,567}", 1234567),
    ("\\boxed{1 234 567}", 1234567),
    ("<answer>\u22123</answer>", -3),
    ("<answer>\u20137</answer>", -7),
    ("<answer>1\u202f000</answer>", 1000),
    ("<answer>The total is $42.</answer>", 42),
    ("<answer></answer> thinking... <answer>42</answer>", 42),
    ("\\boxed{} no wait \\boxed{9}", 9),
    ("\\boxed{5} then \\boxed{6}", 6),
    ("<answer>7</answer> and finally \\boxed{8}", 8),
]


@pytest.mark.parametrize("text,value", GSM8K_FORMS)
def test_gsm8k_reads_the_final_value_of_the_final_answer(text, value):
    from lfpo_bench.tasks.gsm8k import GSM8K, extract_answer

    assert extract_answer(text) == Fraction(value)
    ex = Example("e", "q", {"gold": str(value) if Fraction(value).denominator == 1 else "x"})
    if Fraction(value).denominator == 1:
        assert GSM8K().score(ex, text) == 1.0


@pytest.mark.parametrize("text,gold", [
    ("\\boxed{\\frac{72}{2}}", "72"),  # the value is 36
    ("\\boxed{72 + 1 = 73}", "72"),
    ("\\boxed{72 - 1}", "72"),
    ("\\boxed{7 2}", "72"),  # two numbers: no value
    ("\\boxed{72} is wrong, the answer is \\boxed{73}", "72"),
    ("<answer>72</answer> no: <answer>73</answer>", "72"),
    ("\\boxed{720}", "72"),
    ("\\boxed{7.2}", "72"),
    ("\\boxed{-72}", "72"),
    ("\\boxed{72x}", "720"),
    ("no number at all", "0"),
])
def test_gsm8k_near_misses_score_zero(text, gold):
    from lfpo_bench.tasks.gsm8k import GSM8K

    assert GSM8K().score(Example("e", "q", {"gold": gold}), text) == 0.0


def test_the_final_block_is_the_last_non_empty_one_for_every_task():
    """An echoed empty ``<answer></answer>`` (or empty box) before the real answer never hides it."""
    from lfpo_bench.tasks.countdown import CountdownMini
    from lfpo_bench.tasks.gsm8k import GSM8K
    from lfpo_bench.tasks.sudoku import Sudoku4

    echo = "Format: <answer></answer>. Let me think. "
    sud = Example("s", question="0234341221434321", answer="1234341221434321")
    assert Sudoku4().score(sud, echo + "<answer>1234341221434321</answer>") == 1.0
    assert Sudoku4().score(sud, "<answer>4234341221434321</answer> better: <answer>1234341221434321</answer>") == 1.0
    cd = Example("c", "q", {"numbers": [2, 3, 4], "target": 20})
    assert CountdownMini().score(cd, echo + "<answer>(2 + 3) * 4</answer>") == 1.0
    assert CountdownMini().score(cd, echo + "<answer>(2+3)*4 = 20</answer>") == 1.0
    assert CountdownMini().score(cd, echo + "<answer>20 = (2 + 3) \\times 4</answer>") == 1.0
    assert CountdownMini().score(cd, echo + "<answer>(2 + 3) * 4</answer> hmm <answer>2 + 3 + 4</answer>") == 0.0
    assert GSM8K().score(Example("g", "q", {"gold": "5"}), echo + "<answer>5</answer>") == 1.0
    assert last_block("<answer>  </answer><answer>a</answer><answer>\n</answer>") == "a"
    assert last_block("<answer>1</answer><answer>2") == "2"  # a truncated final block counts
    assert last_boxed("\\boxed{a{b}c} \\boxed{ }") == "a{b}c"
    assert final_answer("no answer here") is None
    assert numeric_value(None) is None


def test_math500_scorer_that_cannot_start_raises_instead_of_scoring_zero(monkeypatch):
    import concurrent.futures as cf

    from lfpo_bench.tasks import math500
    from lfpo_bench.tasks.math500 import MATH500, ScorerError

    class DeadPool:
        def __init__(self, *a, **k):
            pass

        def submit(self, *a, **k):
            f = cf.Future()
            f.set_exception(cf.process.BrokenProcessPool("a child process terminated abruptly"))
            return f

        def shutdown(self, **k):
            pass

    monkeypatch.setattr(math500.cf, "ProcessPoolExecutor", DeadPool)
    monkeypatch.setattr(math500, "_VERIFIER", math500._Verifier())
    with pytest.raises(ScorerError, match="cannot run"):
        MATH500().score_batch([Example("m", "q", {"gold": "1"})], ["\\boxed{1}"])


@pytest.mark.parametrize("name", ["test_three_equal", "test_duplicate", "test_distinct"])
@pytest.mark.parametrize("prefix", ["", "\n", "import re\n", "import math\n\n"])
def test_a_solution_named_test_is_not_cut_as_a_test(name, prefix):
    from lfpo_bench.codeexec import extract_code

    code = f"{prefix}def {name}(x):\n    return x\n"
    assert f"def {name}" in extract_code(code, names=frozenset({name}))
    assert f"def {name}" in extract_code(code)  # nothing defined before it: not a trailing test either
    # a model's own test after its solution is still cut
    trailing = f"def {name}(x):\n    return x\n\ndef test_it():\n    assert {name}(1) == 1\n"
    assert "def test_it" not in extract_code(trailing, names=frozenset({name}))


def test_mbpp_plus_special_oracles():
    """evalplus 0.3.1's oracles for Mbpp/581 (pyramid surface from the perpendicular height) and Mbpp/558
    (digit distance with zero padding) accept what evalplus accepts."""
    from lfpo_bench.codeexec import plus_equal

    assert plus_equal(33, 33, [3, 4], 0.0, "surface_Area", "mbpp")
    assert plus_equal(35, 999, [3, 4], 1e-6, "surface_Area", "mbpp")  # 9 + 2*3*sqrt(1.5^2 + 16), rounded
    assert not plus_equal(34, 999, [3, 4], 1e-6, "surface_Area", "mbpp")
    assert not plus_equal("35", 999, [3, 4], 1e-6, "surface_Area", "mbpp")
    assert plus_equal(7, 999, [123, 256], 0.0, "digit_distance_nums", "mbpp")  # 1 + 3 + 3
    assert plus_equal(4, 999, [5, 12], 0.0, "digit_distance_nums", "mbpp")  # 05 against 12: 1 + 3
    assert not plus_equal(3, 999, [5, 12], 0.0, "digit_distance_nums", "mbpp")
    assert not plus_equal(6, 999, [123, 256], 0.0, "digit_distance_nums", "mbpp")


@pytest.mark.parametrize("out,exp", [
    ([[]], [1.5]), ([[1.0]], [1.0]), ([1.0, [2.0]], [1.0, 2.0]), ([[1.0, 2.0]], [1.0, 2.0]),
    ([], [1.0]), ((1.0,), [1.0]), ([[1.0], [2.0]], [[1.0, 2.0]]), ("1.0", 1.0), ([1.0], 1.0),
])
def test_tolerance_never_equates_outputs_of_different_shapes(out, exp):
    from lfpo_bench.codeexec import plus_equal

    assert not plus_equal(out, exp, [], 1e-6, "f", "humaneval")
    assert not plus_equal(out, exp, [], 0.0, "f", "mbpp")


def test_tolerance_still_accepts_close_outputs_of_one_shape():
    from lfpo_bench.codeexec import plus_equal

    assert plus_equal([[1.0 + 1e-9, 2.0]], [[1.0, 2.0]], [], 1e-6, "f", "humaneval")
    assert plus_equal((0.1 + 0.2,), (0.3,), [], 0.0, "f", "mbpp")
    assert not plus_equal([1.1], [1.0], [], 1e-6, "f", "humaneval")
