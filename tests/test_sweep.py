"""Sweeps: expansion and cell identity (unit), and kill -9 / resume with no lost or duplicated rows
(integration, via a subprocess)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lfpo_bench.results import append_rows, read_rows, repair
from lfpo_bench.sweep import Cell, expand
from lfpo_bench.types import UserError

SPEC = {"name": "t", "methods": ["none", "lfpo"], "tasks": ["sudoku4"], "models": ["tiny-random"], "seeds": [0, 1],
        "train": {"updates": 2, "prompts_per_update": 2, "group_size": 2, "val_limit": 8, "val_every": 0},
        "method": {"lfpo": {"beta": [0.5, 1.0]}}, "eval": {"steps": [1, 2], "limit": 12}}


def test_expansion_is_the_cartesian_product_with_method_grids():
    cells = expand(SPEC)
    assert len(cells) == 2 * 1 + 2 * 2  # none x 2 seeds + lfpo x 2 betas x 2 seeds
    assert {c.method_cfg.get("beta") for c in cells if c.method == "lfpo"} == {0.5, 1.0}
    assert len({c.id for c in cells}) == len(cells)


def test_cell_identity_is_the_hash_of_its_resolved_config():
    a = Cell("lfpo", "sudoku4", None, 0, {"beta": 0.5})
    assert a.id == Cell("lfpo", "sudoku4", None, 0, {"beta": 0.5}).id
    assert a.id != Cell("lfpo", "sudoku4", None, 1, {"beta": 0.5}).id
    assert a.id != Cell("lfpo", "sudoku4", None, 0, {"beta": 0.6}).id


@pytest.mark.parametrize("bad,msg", [
    ({"methodz": ["lfpo"]}, "unknown key"),
    ({"methods": ["lfp"], "method": {}}, "did you mean 'lfpo'"),
    ({"tasks": ["sudoku5"]}, "did you mean"),
    ({"method": {"lfpo": {"betta": 1}}}, "did you mean beta"),
    ({"train": {"lr_rate": 1}}, "unknown config key"),
    ({"eval": {"stepz": [1]}}, "unknown eval key"),
])
def test_sweep_files_reject_unknown_names(bad, msg):
    with pytest.raises(UserError, match=msg):
        expand({**SPEC, **bad})


def test_torn_last_line_is_repaired_and_corrupt_inner_line_is_an_error(tmp_path):
    p = tmp_path / "rows.jsonl"
    append_rows(p, [{"a": 1}, {"a": 2}])
    with open(p, "ab") as f:
        f.write(b'{"a": 3, "b"')  # killed mid-write
    assert [r["a"] for r in read_rows(p)] == [1, 2]
    assert repair(p) > 0
    append_rows(p, [{"a": 4}])
    assert [r["a"] for r in read_rows(p)] == [1, 2, 4]
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: corrupt"):
        read_rows(p)


@pytest.mark.integration
def test_sigkill_mid_sweep_then_resume_loses_and_duplicates_nothing(tmp_path):
    spec = {**SPEC, "seeds": [0, 1], "method": {"lfpo": {"beta": 1.0}}}  # 4 cells
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lfpo_bench.cli", "sweep", "--config", str(path), "--out", str(out)]
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "cells.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_rows(out / "cells.jsonl")
    assert 1 <= len(first) < 4, "the kill should land after the first cell and before the last"
    # simulate a torn append from the kill as well
    with open(out / "rows.jsonl", "ab") as f:
        f.write(b'{"cell": "x", "method"')
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cells = read_rows(out / "cells.jsonl")
    statuses = [c["cell"] for c in cells if c["status"] == "done"]
    assert len(statuses) == len(set(statuses)) == 4, "a cell ran twice or is missing"
    rows = read_rows(out / "rows.jsonl")
    keys = [(r["cell"], r["stage"], r["steps"]) for r in rows]  # a trained cell also has its last update's rows
    assert len(keys) == len(set(keys)) and sum(k[1] == "after" for k in keys) == 4 * 2
    assert {r["cell"] for r in rows} == set(statuses)
    json.dumps(rows)  # every row is plain JSON


def test_shipped_presets_expand_and_use_steps_ratio():
    from lfpo_bench.config import load_file
    from lfpo_bench.sweep import PRESETS

    d1 = expand(load_file(PRESETS / "d1.yaml"))
    assert {c.task for c in d1} == {"gsm8k", "math500", "countdown", "sudoku"}
    assert all(c.eval_cfg["steps_ratio"] == 0.5 and c.eval_cfg["gen_length"] == [128, 256, 512] for c in d1)
    assert expand(load_file(PRESETS / "llada.yaml"))
    ablation = expand(load_file(PRESETS / "lfpo-ablation-sudoku4.yaml"))
    assert len(ablation) == 13 * 3 and {c.method_cfg.get("k") for c in ablation} == {None, 1, 8}


def test_shipped_tune_protocols_give_every_method_the_same_budget():
    from lfpo_bench.config import load_file
    from lfpo_bench.registry import METHODS
    from lfpo_bench.sweep import PRESETS
    from lfpo_bench.tune import knob_values, plan, tune_spec

    names = [f"fair-{t}{q}" for t in ("sudoku4", "countdown3-mini", "toy-code") for q in ("", "-quick")]
    assert {p.stem for p in PRESETS.glob("fair-*.yaml")} == set(names)
    trained = sorted(m for m in METHODS.names() if m not in ("none", "sft"))
    for name in names:
        spec = load_file(PRESETS / f"{name}.yaml")
        assert sorted(spec["methods"]) == sorted(["none", *trained]), name  # every method the harness ships
        trials = plan(spec, name)
        assert len({len(p) for m, p in trials.items() if m != "none"}) == 1
        assert spec["tune"].get("extend_edges"), name
        for m, points in trials.items():  # each method's own knobs, not only the learning rate
            if m != "none":
                assert (set(knob_values(points)) | {f"method.{k}" for _, mc in points for k in mc}) - {"train.lr"}, (name, m)
        for s in tune_spec(spec, trials, name):  # every knob a field of its method's config, in range
            assert expand(s) and s["eval"]["split"] == "validation"


def test_resuming_a_folder_whose_synthetic_task_data_changed_is_refused(tmp_path, monkeypatch):
    """A done cell is never rerun, and its id hashes its configuration, not the data: after a task's generator
    changes, resuming would leave the old rows standing beside new ones under the same protocol. The sweep
    refuses, naming the task and split, and leaves the folder as it was; unchanged data resumes as before."""
    from lfpo_bench.registry import TASKS
    from lfpo_bench.sweep import sweep

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "s", "methods": ["none"], "tasks": ["sudoku4"], "models": ["tiny-random"],
                                 "seeds": [0], "eval": {"steps": [1], "limit": 6}, "timing": {"reps": 0}}))
    out = tmp_path / "out"
    sweep(str(f), out=str(out), show_progress=False)
    before = (out / "rows.jsonl").read_text()
    _, _, state = sweep(str(f), out=str(out), show_progress=False)  # same data: nothing to do, nothing refused
    assert len(state.done) == 1 and (out / "rows.jsonl").read_text() == before
    cls = TASKS.get("sudoku4")
    real = cls._load
    monkeypatch.setattr(cls, "_load", lambda self, split: real(self, split)[::-1] if split == "test" else real(self, split))
    with pytest.raises(UserError, match=r"different sudoku4:test than this code generates.*new folder"):
        sweep(str(f), out=str(out), show_progress=False)
    assert (out / "rows.jsonl").read_text() == before


def test_a_sweep_on_a_local_test_file_resumes_against_that_file(tmp_path):
    """The data check reads a task's data as its cells did (``data:``, a local test file for sudoku4): a resume
    with the same file passes, not a false refusal against the generated split."""
    from lfpo_bench.tasks.sudoku import Sudoku4

    from lfpo_bench.sweep import sweep

    gen = Sudoku4().load("test")[:5]
    local = tmp_path / "mine.jsonl"
    local.write_text("".join(json.dumps({"Puzzle": e.question, "Solution": e.answer}) + "\n" for e in gen[::-1]))
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"name": "s", "methods": ["none"], "tasks": ["sudoku4"], "models": ["tiny-random"],
                                 "seeds": [0], "data": str(local), "eval": {"steps": [1]}, "timing": {"reps": 0}}))
    out = tmp_path / "out"
    sweep(str(f), out=str(out), show_progress=False)
    _, _, state = sweep(str(f), out=str(out), show_progress=False)
    assert len(state.done) == 1 and [r["n"] for r in read_rows(out / "rows.jsonl")] == [5]
