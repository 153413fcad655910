"""Never destroy a user's file: every writing command refuses, before any work, a destination it did not
create for the same kind of result; concurrent writers are refused; identifiers never become paths
outside their folder; out-of-range values are errors; Ctrl-C says what was kept and how to resume.

Each refusal is checked the same way: exit 2, no traceback, and every file that existed before is byte
for byte what it was (checksums), with nothing new written into a folder the project did not create."""

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from test_bad_input import _row

from lfpo_bench import cli


def tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lfpo-bench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A user's folder: notes, a data file whose lines are JSON, a config, a folder of their own files, a
    sweep file, result rows; plus an lfpo-bench run folder and sweep folder written by the project."""
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.md").write_text("# my notes\n")
    (user / "data.jsonl").write_text(json.dumps({"question": "1+1", "answer": 2}) + "\n")
    (user / "config.json").write_text(json.dumps({"lr": 3e-4}))
    (user / "mine").mkdir()
    (user / "mine" / "thesis.tex").write_text("\\section{x}")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(_row("after")) + "\n")
    spec = {"name": "s1", "methods": ["none"], "tasks": ["sudoku4"], "models": ["tiny-random"], "seeds": [0],
            "eval": {"steps": [2], "limit": 2}, "timing": {"reps": 0}}
    (tmp_path / "s1.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "s2.yaml").write_text(yaml.safe_dump({**spec, "name": "s2"}))
    tune = {**spec, "name": "t1", "tune": {"trials": 1}, "final": {"seeds": [0]}}
    (tmp_path / "t1.yaml").write_text(yaml.safe_dump(tune))
    return tmp_path


def foreign_targets(w):
    u = w / "user"
    return {"notes": u / "notes.md", "data": u / "data.jsonl", "config": u / "config.json", "folder": u / "mine", "user": u}


WRITERS = {  # command line with {out}: every command that writes a file or folder the user names
    "eval": "eval --task sudoku4 --model tiny-random --steps 2 --limit 2 --out {out}",
    "table": "table {rows} --out {out}",
    "gradcheck": "gradcheck --task sudoku4 --model tiny-random --methods lfpo --prompts 1 --batches 1 --ref-samples 4 --out {out}",
    "sweep": "sweep --config {w}/s1.yaml --out {out}",
    "tune": "tune --config {w}/t1.yaml --out {out}",
    "plot": "plot {rows} --out {out}",
    "pretrain": "pretrain --task sudoku4 --steps 1 --out {out}",
    "lm-eval": "lm-eval --tasks x --out {out}",
}


@pytest.mark.parametrize("target", ["notes", "data", "config", "folder", "user"])
@pytest.mark.parametrize("cmd", sorted(WRITERS))
def test_no_command_writes_over_what_it_did_not_create(cmd, target, world, monkeypatch, capsys):
    out = foreign_targets(world)[target]
    before = tree(world)
    argv = WRITERS[cmd].format(out=out, rows=world / "rows.jsonl", w=world).split()
    code, err = run_cli(argv, monkeypatch, capsys)
    assert code == 2, (cmd, target, err)
    assert "Traceback" not in err and "error:" in err
    after = tree(world)
    assert {k: v for k, v in after.items() if k in before} == before, "a user's file changed"
    assert not [k for k in after if k not in before and k.startswith("user")], "new files in a user's folder"


def test_a_run_never_writes_into_a_folder_it_did_not_create(world, monkeypatch, capsys):
    before = tree(world)
    for argv in (["run", "--method", "none", "--task", "sudoku4", "--model", "tiny-random", "--out-dir", str(world / "user"),
                  "--run-id", "mine"],
                 ["run", "--method", "none", "--task", "sudoku4", "--model", "tiny-random", "--out-dir", str(world / "user" / "notes.md")]):
        code, err = run_cli(argv, monkeypatch, capsys)
        assert code == 2 and "Traceback" not in err, err
    assert tree(world) == before


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", "/abs", ""])
def test_identifiers_that_become_paths_stay_inside_their_folder(run_id, world, monkeypatch, capsys):
    code, err = run_cli(["run", "--method", "none", "--task", "sudoku4", "--model", "tiny-random", "--out-dir",
                         str(world / "runs"), "--run-id", run_id], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "--run-id" in err, err
    assert not (world / "x").exists() and not (world / "a").exists()


def test_a_sweep_folder_belongs_to_its_sweep_and_a_run_folder_to_its_run(world, monkeypatch, capsys):
    code, err = run_cli(["sweep", "--config", str(world / "s1.yaml"), "--out", str(world / "sw")], monkeypatch, capsys)
    assert code == 0, err
    mine = tree(world / "sw")
    code, err = run_cli(["sweep", "--config", str(world / "s2.yaml"), "--out", str(world / "sw")], monkeypatch, capsys)
    assert code == 2 and "holds the sweep 's1'" in err and "Traceback" not in err
    run_dir = next((world / "sw" / "runs").iterdir())
    code, err = run_cli(["sweep", "--config", str(world / "s2.yaml"), "--out", str(run_dir)], monkeypatch, capsys)
    assert code == 2 and "holds an lfpo-bench run, not a sweep" in err
    assert tree(world / "sw") == mine
    code, err = run_cli(["sweep", "--config", str(world / "s1.yaml"), "--out", str(world / "sw")], monkeypatch, capsys)
    assert code == 0  # its own folder: resumes (nothing left to do)


HOLD = textwrap.dedent("""
    import sys, time
    from lfpo_bench.outputs import Lock
    with Lock(sys.argv[1], "sweep"):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("cmd", ["sweep", "run"])
def test_a_second_writer_is_refused_with_the_holders_pid(cmd, world, monkeypatch, capsys):
    from lfpo_bench.outputs import claim_folder

    folder = world / "busy"
    claim_folder(folder, "sweep" if cmd == "sweep" else "run", name="s1" if cmd == "sweep" else None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(world)
        argv = (["sweep", "--config", str(world / "s1.yaml"), "--out", str(folder)] if cmd == "sweep" else
                ["run", "--method", "none", "--task", "sudoku4", "--model", "tiny-random", "--out-dir", str(world), "--run-id", "busy"])
        code, err = run_cli(argv, monkeypatch, capsys)
        assert code == 2 and f"pid {holder.pid}" in err and "Traceback" not in err, err
        assert tree(world) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it
    code, err = run_cli(argv, monkeypatch, capsys)
    assert code == 0, err


RANGES = [
    "run --method diffu_grpo --task sudoku4 --set mu=0",
    "run --method diffu_grpo --task sudoku4 --set kl_beta=-0.1",
    "run --method lfpo --task sudoku4 --set beta=-1",
    "run --method lfpo --task sudoku4 --set ema=1.5",
    "run --method diffu_grpo --task sudoku4 --set p_mask_prompt=2",
    "run --method trace_rl --task sudoku4 --set shrink=0",
    "run --method lfpo --task sudoku4 --set k=0",
    "run --method lfpo --task sudoku4 --set skip_zero_signal=maybe",
    "table {rows} --target 85",
    "table {rows} --target 0",
    "gradcheck --task sudoku4 --steps 0",
    "gradcheck --task sudoku4 --target 2",
    "pretrain --task sudoku4 --steps 0",
    "eval --task sudoku4 --block-length 0",
]


@pytest.mark.parametrize("argv", RANGES)
def test_values_that_would_do_nothing_or_something_else_are_errors(argv, world, monkeypatch, capsys):
    before = tree(world)
    code, err = run_cli(argv.format(rows=world / "rows.jsonl").split(), monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "error:" in err, err
    assert tree(world) == before


def test_ctrl_c_says_what_was_kept_and_how_to_resume(world, monkeypatch, capsys):
    from lfpo_bench import trainer

    def interrupted(self, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "fit", interrupted)
    code, err = run_cli(["run", "--method", "lfpo", "--task", "sudoku4", "--model", "tiny-random", "--limit", "2", "--steps", "2",
                         "--out-dir", str(world / "runs"), "--run-id", "r"], monkeypatch, capsys)
    assert code == 130
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("interrupted: ") and "resume with: lfpo-bench run" in lines[-1] and lines[-1].endswith("--resume")
    assert "Traceback" not in err
