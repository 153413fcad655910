"""Task registry and the non-code tasks: extraction and scoring by hand, data loading and its errors."""

from collections import Counter
from fractions import Fraction

import pytest

from lfpo_bench.registry import TASKS
from lfpo_bench.types import Example, UserError


def test_registry_lists_every_task_with_source_and_defaults():
    expected = {"gsm8k", "math500", "countdown", "countdown3-mini", "sudoku", "sudoku4", "humaneval", "humaneval_plus",
                "mbpp", "mbpp_plus", "toy-code"}
    assert expected <= set(TASKS.names())
    for name in expected:
        s = TASKS.get(name).summary()
        assert s["source"] and s["model"] and s["gen_length"] > 0


def test_unknown_task_says_did_you_mean():
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        TASKS.get("gsm8")


# ---- countdown -------------------------------------------------------------------------------------
def test_countdown_safe_evaluator_by_hand():
    from lfpo_bench.tasks.countdown import BadExpression, check_expression, evaluate

    assert evaluate("(30 + 100 - 93)") == (Fraction(37), [30, 100, 93])
    assert evaluate("7/2") == (Fraction(7, 2), [7, 2])
    for bad in ("__import__('os')", "2**10", "x + 1", "1 if 1 else 2", "[1][0]", "1/0", "3.5 + 1"):
        with pytest.raises(BadExpression):
            evaluate(bad)
    assert check_expression("100 - 93 + 30", [30, 100, 93], 37)
    assert not check_expression("100 - 93", [30, 100, 93], 7)  # 30 unused
    assert not check_expression("100 - 93 + 30 + 30", [30, 100, 93], 67)  # 30 used twice
    assert not check_expression("100 - 93 + 30", [30, 100, 93], 36)


def test_countdown_extracts_the_last_answer_block_and_cuts_the_equals_sign():
    t = TASKS.get("countdown")()
    ex = Example("x", "", {"numbers": [2, 3, 4], "target": 20})
    assert t.score(ex, "try <answer>2+3</answer> no wait <answer>(2 + 3) * 4 = 20</answer>") == 1.0
    assert t.score(ex, "<answer>2*3*4</answer>") == 0.0


SYNTHETIC = sorted(n for n in TASKS.names() if getattr(TASKS.get(n), "synthetic", False))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_synthetic_tasks_held_out_splits_never_repeat_a_problem(name):
    """A validation or test split that asks one problem twice counts one answer twice: greedy decoding gives the
    same completion to the same prompt, so the repeats move together and every confidence interval and paired
    test over problems overstates its precision (toy-code's 400 test problems once held 29 prompts). Checked on
    what either kind of model is shown: the bare problem (the tiny model) and the instructed prompt."""
    t = TASKS.get(name)()
    for split in (t.val_split, t.eval_split):
        exs = t.load(split)
        assert len({e.id for e in exs}) == len(exs)
        for style in ("compact", "chat"):
            repeated = [q for q, n in Counter(t.prompt(e, style) for e in exs).items() if n > 1]
            assert not repeated, f"{name}:{split} ({style}) asks {len(repeated)} problems more than once, e.g. {repeated[0]!r}"


def test_countdown_mini_held_out_splits_use_unseen_number_triples():
    t = TASKS.get("countdown3-mini")()
    key = lambda e: tuple(sorted(e.answer["numbers"]))  # noqa: E731
    train = {key(e) for e in t.load("train")}
    assert not train & {key(e) for e in t.load("test")}
    assert all(t.score(e, e.answer["expr"]) == 1.0 for e in t.load("test")[:50])


def test_countdown_d1_test_file(shared_data, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))
    exs = TASKS.get("countdown")().load("test")
    assert len(exs) == 256 and exs[0].answer == {"numbers": [30, 100, 93], "target": 23}


# ---- gsm8k -----------------------------------------------------------------------------------------
def test_gsm8k_extraction_order_and_normalisation():
    from lfpo_bench.tasks.gsm8k import extract_answer

    assert extract_answer("x = 3 ... so \\boxed{1,000} and then 7") == 1000
    assert extract_answer("<answer>$42.</answer> 13") == 42
    assert extract_answer("it costs 5 then 12.50 dollars") == Fraction(25, 2)
    assert extract_answer("\\boxed{\\frac{1}{2}}") == Fraction(1, 2)
    assert extract_answer("no digits") is None
    t = TASKS.get("gsm8k")()
    ex = Example("x", "q", {"gold": "1000", "solution": "... #### 1000"})
    assert t.score(ex, "The answer is \\boxed{1,000}.") == 1.0
    assert t.score(ex, "The answer is 999") == 0.0


def test_gsm8k_splits_from_local_files(shared_data, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))
    t = TASKS.get("gsm8k")()
    assert len(t.load("test")) == 1319
    assert len(t.load("train")) + len(t.load("validation")) == 7473
    assert not {e.question for e in t.load("train")} & {e.question for e in t.load("validation")}


def test_offline_without_a_local_file_names_the_dataset_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("LFPO_BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("LFPO_BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"openai/gsm8k.*(--data|LFPO_BENCH_DATA_DIR)"):
        TASKS.get("gsm8k")().load("test")


# ---- math500 ---------------------------------------------------------------------------------------
def test_math500_uses_math_verify_equivalence(shared_data, monkeypatch):
    pytest.importorskip("math_verify", reason="needs the `eval` extra: pip install 'lfpo-bench[eval]'")
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))
    t = TASKS.get("math500")()
    ex = Example("x", "q", {"gold": "\\frac{1}{2}"})
    scores = [s.score for s in t.score_batch([ex] * 3, ["so \\boxed{0.5}", "\\boxed{\\frac{2}{4}}", "\\boxed{3}"])]
    assert scores == [1.0, 1.0, 0.0]
    assert len(t.load("test")) == 500


# ---- toy-code --------------------------------------------------------------------------------------
def test_toy_code_partial_credit_on_hidden_inputs_and_held_out_functions():
    t = TASKS.get("toy-code")()
    ex = Example("x", "", {"expr": "2*x+1", "hidden": [[4, 9], [5, 11], [-1, -1], [10, 21]]}, {"split": "test"})
    got = [s.score for s in t.score_batch([ex] * 4, ["2*x+1", "x+x+1 ", "9", "1/0"])]
    assert got == [1.0, 1.0, 0.25, 0.0]
    assert not {e.answer["expr"] for e in t.load("train")} & {e.answer["expr"] for e in t.load("test")}


def test_toy_code_every_prompt_has_one_answer_and_the_held_out_functions_are_unseen():
    """No two functions of the task show the same f(0..3) (else a prompt would have two right answers that
    disagree on the hidden inputs), the answer fits the canvas, and no held-out function (as a function: its
    values, not its spelling) is in training."""
    from lfpo_bench.tasks.toy_code import HIDDEN, SHOWN, apply, functions

    t = TASKS.get("toy-code")()
    fns = functions()
    assert len({tuple(apply(f, x) for x in SHOWN) for f in fns}) == len(fns)
    assert max(map(len, fns)) <= t.gen_length
    values = lambda e: tuple(apply(e.answer["expr"], x) for x in SHOWN + HIDDEN)  # noqa: E731
    train = {values(e) for e in t.load("train")}
    for split in ("validation", "test"):
        assert not train & {values(e) for e in t.load(split)}
        assert all(t.score(e, e.answer["expr"]) == 1.0 for e in t.load(split)[:20])
