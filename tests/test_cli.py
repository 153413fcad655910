"""The CLI is thin: options reach the work functions, user errors print a message (exit 2), and one real
subprocess run writes provenance-complete rows."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lfpo_bench import cli

runner = CliRunner()


def test_eval_options_reach_the_work_function(monkeypatch):
    seen = {}

    def fake(args):
        seen["args"] = args
        from lfpo_bench.types import ResultRow

        row = ResultRow(method="none", task=args.task, model="m", split="test", gen_length=16, steps=2, block_length=16,
                        decoding="fixed", temperature=0.0, remasking="low_confidence", seed=args.opts.seed, n=1, accuracy=0.5,
                        nfe_mean=2.0, latency_ms_p50=1.0, latency_ms_p95=1.0, tokens_per_s=10.0, metrics={"solved": 0.25})
        return [row], "out.jsonl", True

    monkeypatch.setattr("lfpo_bench.eval_job.run_eval", fake)
    res = runner.invoke(cli.app, ["eval", "--task", "sudoku4", "--steps", "2,4", "--threshold", "0.9", "--seed", "3", "--limit", "5"])
    assert res.exit_code == 0, res.output
    a = seen["args"]
    assert (a.task, a.decoding.steps, a.decoding.thresholds, a.opts.seed, a.opts.limit) == ("sudoku4", (2, 4), (0.9,), 3, 5)
    assert "50.0" in res.output and "25.0" in res.output  # accuracy and the task's extra metric, in percent


def test_bad_step_list_is_a_user_error():
    res = runner.invoke(cli.app, ["eval", "--task", "sudoku4", "--steps", "two"])
    assert res.exit_code != 0
    assert "comma-separated integers" in str(res.exception) or "comma-separated integers" in res.output


def test_main_prints_user_errors_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lfpo-bench", "eval", "--task", "sudok"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "Traceback" not in err


def test_real_subprocess_eval_writes_rows_with_provenance(tmp_path):
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "lfpo_bench.cli", "eval", "--task", "sudoku4", "--model", "tiny-random",
                        "--steps", "1,2", "--limit", "6", "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["steps"] for r in rows] == [1, 2]
    for r in rows:
        assert r["n"] == 6 and len(r["scores"]) == 6 and len(r["problem_ids"]) == 6
        assert r["git_sha"] and r["config_hash"] and len(r["dataset_sha256"]) == 64 and r["device"].startswith("cpu")
        assert r["torch_version"] and r["config"]["decoding"]["steps"] == r["steps"]
