"""Bad input: a clear error before any work, exit status 2, no traceback, and result files untouched.

Each case is a mistake a user makes on the command line or in a config; the CLI runs in-process through
``cli.main`` so that an uncaught exception (a traceback) fails the test instead of being reported."""

import json
import sys

import pytest

from lfpo_bench import cli
from lfpo_bench.types import ResultRow


def _row(stage: str) -> dict:
    r = ResultRow(method="lfpo", task="sudoku4", model="m", split="test", gen_length=16, steps=2, block_length=16,
                  decoding="fixed", temperature=0.0, remasking="low_confidence", seed=0, n=2, accuracy=0.5,
                  nfe_mean=2.0, latency_ms_p50=1.0, latency_ms_p95=1.0, tokens_per_s=10.0, metrics={"solved": 0.5})
    d = r.to_dict()
    d.update(stage=stage, run_id="r1", scores=[0.0, 1.0], metric_scores={"solved": [0.0, 1.0]})
    return d


@pytest.fixture
def files(tmp_path):
    rows = tmp_path / "results.jsonl"
    rows.write_text(json.dumps(_row("after")) + "\n")
    before_only = tmp_path / "before-run"
    before_only.mkdir()
    (before_only / "rows.jsonl").write_text(json.dumps(_row("before")) + "\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nlast line without newline")
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    return {"rows": rows, "before": before_only, "notes": notes, "file": a_file, "dir": tmp_path}


def _main(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lfpo-bench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


CASES = [
    ("eval --task sudoku4 --n-samples 0", "--n-samples"),
    ("eval --task sudoku4 --batch-size 0", "--batch-size"),
    ("eval --task sudoku4 --limit -1", "--limit"),
    ("eval --task sudoku4 --temperature -1", "--temperature"),
    ("eval --task sudoku4 --remasking lowconf", "did you mean 'low_confidence'"),
    ("eval --task sudoku4 --steps 0", "steps"),
    ("eval --task sudoku4 --gen-length 0", "--gen-length"),
    ("eval --task sudoku4 --block-length 5", "divisible"),
    ("eval --task GSM8K", "did you mean 'gsm8k'"),
    ("eval --task sudoku4 --out {dir}", "is a folder"),
    ("eval --task sudoku4 --out {file}/rows.jsonl", "is a file, not a folder"),
    ("eval --task sudoku4 --out {notes}", "not a results file"),
    ("eval --task sudoku4 --threshold 1.5", "threshold"),
    ("run --method lfpo --task sudoku4 --set train.rollout.steps=1000", "train.rollout.steps=1000"),
    ("run --method lfpo --task sudoku4 --set train.rollout.steps=-8", "rollout.steps"),
    ("run --method lfpo --task sudoku4 --set train.rollout.steps=0", "rollout.steps"),
    ("run --method lfpo --task sudoku4 --set train.updates=-5", "train.updates"),
    ("run --method lfpo --task sudoku4 --set train.lr=0", "train.lr"),
    ("run --method lfpo --task sudoku4 --set temperature=-1", "temperature"),
    ("run --method lfpo --task sudoku4 --limit 0", "--limit"),
    ("run --method lfpo --task sudoku4 --out-dir {file}", "is a file"),
    ("run --method lfpo --task sudoku4 --report-to tensorbord", "unknown tracker"),
    ("run --method lfpp --task sudoku4", "did you mean 'lfpo'"),
    ("table {before}", "not finished training"),
    ("table {rows} --metric solvd", "did you mean 'solved'"),
    ("table {rows} --out {rows}", "would overwrite"),
    ("table {dir}/nothing-here", "no results"),
]


@pytest.mark.parametrize("argv,expect", CASES, ids=[c[0] for c in CASES])
def test_user_errors_exit_2_without_traceback_and_leave_files_alone(argv, expect, files, monkeypatch, capsys):
    before = {k: p.read_bytes() for k, p in files.items() if p.is_file()}
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv.split()]
    code, err = _main(args, monkeypatch, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert expect in err, err
    assert {k: p.read_bytes() for k, p in files.items() if p.is_file()} == before


def test_missing_data_dir_is_named(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(tmp_path / "nope"))
    code, err = _main(["eval", "--task", "gsm8k", "--limit", "2"], monkeypatch, capsys)
    assert code == 2 and "LFPO_BENCH_DATA_DIR" in err and "no such folder" in err


def test_a_short_write_is_an_error_and_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """A full disk: os.write writes part of the data and then fails; the rows file must not keep a torn row."""
    import os

    from lfpo_bench import results
    from lfpo_bench.types import UserError

    path = tmp_path / "rows.jsonl"
    results.append_rows(path, [{"a": 1}])
    good = path.read_bytes()
    real = os.write
    calls = []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "write", full_disk)
    with pytest.raises(UserError, match="No space left"):
        results.append_rows(path, [{"b": 2}, {"c": 3}])
    monkeypatch.setattr(results.os, "write", real)
    assert path.read_bytes() == good


def test_rows_are_never_appended_to_or_repaired_in_a_foreign_file(tmp_path):
    from lfpo_bench import results
    from lfpo_bench.types import UserError

    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nunterminated")
    assert results.repair(notes) == 0
    with pytest.raises(UserError, match="not a results file"):
        results.append_rows(notes, [{"a": 1}])
    assert notes.read_bytes() == b"line one\nunterminated"


def _jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_a_data_folder_covers_every_split_and_a_file_only_the_evaluated_one(tmp_path, monkeypatch):
    from lfpo_bench.config import make_task
    from lfpo_bench.types import UserError

    monkeypatch.delenv("LFPO_BENCH_DATA_DIR", raising=False)
    folder = tmp_path / "data"
    folder.mkdir()
    _jsonl(folder / "gsm8k_test.jsonl", [{"question": "t?", "answer": "x #### 1"}])
    _jsonl(folder / "gsm8k_train.jsonl", [{"question": f"q{i}?", "answer": f"x #### {i}"} for i in range(600)])
    t = make_task("gsm8k", str(folder))
    assert len(t.load("test")) == 1 and len(t.load("train")) == 100 and len(t.load("validation")) == 500
    # a file is the evaluated split's data only: training data is not read from it
    t = make_task("gsm8k", str(folder / "gsm8k_test.jsonl"))
    assert t.data_for("test") and t.data_for("train") is None and t.data_for("validation") is None
    # a folder without a split's file names that file
    (folder / "gsm8k_train.jsonl").unlink()
    with pytest.raises(UserError, match="gsm8k_train.jsonl"):
        make_task("gsm8k", str(folder)).load("train")


def test_a_file_of_the_wrong_benchmark_is_named_not_a_keyerror(tmp_path, monkeypatch, capsys):
    """`run --task humaneval --data mbpp_full.jsonl`: the file is HumanEval's test split, and it is not one."""
    f = tmp_path / "mbpp_full.jsonl"
    _jsonl(f, [{"task_id": 1, "text": "t", "code": "def f(): pass", "test_list": []}])
    code, err = _main(["eval", "--task", "humaneval", "--data", str(f)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "a HumanEval file" in err and "prompt" in err


def test_offline_hub_fails_at_once_with_the_data_hint(monkeypatch, capsys, tmp_path):
    import time

    monkeypatch.delenv("LFPO_BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.monotonic()
    code, err = _main(["eval", "--task", "gsm8k", "--limit", "2"], monkeypatch, capsys)
    assert time.monotonic() - t0 < 10
    assert code == 2 and "not reachable" in err and "gsm8k_test.jsonl" in err and "--data FOLDER" in err


def test_a_missing_real_model_on_a_cpu_machine_points_at_the_embedded_default(monkeypatch):
    import torch

    from lfpo_bench.models.hf import resolve_path
    from lfpo_bench.types import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--model tiny") as e:
        resolve_path("GSAI-ML/LLaDA-8B-Instruct-not-cached")
    assert "GPU" in str(e.value)
