"""Launchers: cells through submitit's local executor give the inline rows; a killed supervisor or worker
loses and duplicates nothing; a raising cell is failed with its error while the others finish; status shows
every state; launcher settings are checked and reach the sbatch script."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfpo_bench.types import UserError

pytest.importorskip("submitit")

VOLATILE = {"device", "tokens_per_s", "checkpoint", "created", "latency_ms_p50", "latency_ms_p95", "timing"}
RAISING = '''
from dataclasses import dataclass
from lfpo_bench.method import Method


class Boom(Method):
    @dataclass(frozen=True)
    class Config:
        pass

    def loss(self, *args, **kwargs):
        raise RuntimeError("boom: this method always raises")
'''


def spec(tmp_path: Path, methods, updates=2, seeds=(0, 1), name="lt") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(json.dumps({
        "name": name, "methods": list(methods), "tasks": ["sudoku4"], "seeds": list(seeds),
        "train": {"updates": updates, "prompts_per_update": 2, "group_size": 4, "val_every": 0, "val_limit": 8,
                  "checkpoint_every": 1},
        "eval": {"steps": [4], "limit": 8}, "timing": {"reps": 0}}))
    return p


def cli(*args, check=True, **kw):
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "lfpo_bench.cli", *args], capture_output=True, text=True, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}: {p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def rows(folder: Path) -> dict:
    out = {}
    for line in (folder / "rows.jsonl").read_text().splitlines():
        r = json.loads(line)
        k = (r["cell"], r["stage"], r["config_hash"])
        assert k not in out, f"row {k} merged twice"
        out[k] = {f: v for f, v in r.items() if f not in VOLATILE}
    return out


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two training sweeps: .ci/run runs it in its launcher tier
def test_local_workers_give_the_inline_rows(tmp_path):
    sw = spec(tmp_path, ["none", "diffu_grpo"])
    cli("sweep", "--config", str(sw), "--out", str(tmp_path / "inline"))
    p = cli("sweep", "--config", str(sw), "--out", str(tmp_path / "local"), "--launcher", "local", "--jobs", "2")
    assert "4/4 cells done" in p.stdout
    a, b = rows(tmp_path / "inline"), rows(tmp_path / "local")
    assert a.keys() == b.keys() and len(a) == 6  # 2 none cells x 1 row, 2 trained cells x (after, last)
    for k in a:
        assert a[k] == b[k], k
    recs = records(tmp_path / "local")
    assert sorted(r["status"] for r in recs) == ["done"] * 4 + ["submitted"] * 4
    assert all(r["job_id"] and r["launcher"] == "local" for r in recs)
    # workers wrote their rows into their own run folders; only the supervisor wrote rows.jsonl
    assert all((tmp_path / "local" / "runs" / r["cell"] / "cell_rows.jsonl").exists() for r in recs)


def wait_for(pred, timeout=300, what="condition"):
    t = time.time()
    while time.time() - t < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _lock_pid(run_dir: Path) -> int | None:
    try:
        txt = (run_dir / ".lock").read_text().strip()
    except OSError:
        return None
    return int(txt) if txt.isdigit() else None


@pytest.mark.slow  # minutes: .ci/run runs it in its launcher tier (pytest -m slow tests/test_launch.py)
def test_killed_supervisor_and_worker_then_rerun_lose_and_duplicate_nothing(tmp_path):
    sw = spec(tmp_path, ["diffu_grpo"], updates=6, seeds=(0, 1, 2))
    out = tmp_path / "s"
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    sup = subprocess.Popen([sys.executable, "-m", "lfpo_bench.cli", "sweep", "--config", str(sw), "--out", str(out),
                            "--launcher", "local", "--jobs", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subs = wait_for(lambda: [r for r in records(out) if r["status"] == "submitted"] if (out / "cells.jsonl").exists() else [],
                         what="two submitted cells")
        subs = wait_for(lambda: [r for r in records(out) if r["status"] == "submitted"] if len(
            [r for r in records(out) if r["status"] == "submitted"]) >= 2 else [], what="two submitted cells")
        victim = subs[0]["cell"]
        vdir = out / "runs" / victim
        # the worker has checkpointed at least once: the retry must resume, not start over
        wait_for(lambda: (vdir / "trainer_state.pt").exists() and _lock_pid(vdir), what="a checkpoint of the first cell")
        worker = _lock_pid(vdir)
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait()
        os.kill(worker, signal.SIGKILL)
    finally:
        if sup.poll() is None:
            sup.kill()
    before = cli("sweep", "status", str(out)).stdout  # the victim's state says what a rerun will do with it
    assert "stopped unfinished" in before and "resumes from its checkpoint" in before, before
    # the killed worker died unwatched, with its harness (a reboot, a closed session): rerunning the same command
    # resubmits it and it resumes from its checkpoint instead of being recorded as failed; nothing runs twice
    p = cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "2")
    assert "3/3 cells done" in p.stdout
    recs = records(out)
    by_cell: dict[str, list[str]] = {}
    for r in recs:
        by_cell.setdefault(r["cell"], []).append(r["status"])
    assert by_cell[victim] == ["submitted", "interrupted", "submitted", "done"], by_cell[victim]
    for c, sts in by_cell.items():
        if c != victim:
            assert sts.count("submitted") <= 1 and sts[-1] == "done", (c, sts)  # never submitted twice
    got = rows(out)
    assert len(got) == 6 and {k[0] for k in got} == set(by_cell)  # every cell's after + last rows, each once
    assert_resumed(out, victim)
    status = cli("sweep", "status", str(out)).stdout
    assert "3 done" in status and "failed" not in status


@pytest.mark.slow  # worker processes: .ci/run runs it in its launcher tier
def test_a_worker_killed_under_watch_is_failed_and_retry_failed_resumes_it(tmp_path):
    sw = spec(tmp_path, ["diffu_grpo"], updates=6, seeds=(0,))
    out = tmp_path / "s"
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    sup = subprocess.Popen([sys.executable, "-m", "lfpo_bench.cli", "sweep", "--config", str(sw), "--out", str(out),
                            "--launcher", "local", "--jobs", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        sub = wait_for(lambda: [r for r in records(out) if r["status"] == "submitted"] if (out / "cells.jsonl").exists() else [],
                       what="a submitted cell")[0]
        vdir = out / "runs" / sub["cell"]
        wait_for(lambda: (vdir / "trainer_state.pt").exists() and _lock_pid(vdir), what="a checkpoint of the cell")
        os.kill(_lock_pid(vdir), signal.SIGKILL)  # the supervisor is alive and sees its worker die
        text, _ = sup.communicate(timeout=300)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert sup.returncode == 1, text
    assert [r["status"] for r in records(out)] == ["submitted", "failed"]
    assert "without a result" in records(out)[-1]["error"]
    p = cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "1", check=False)
    assert p.returncode == 1 and "--retry-failed" in p.stdout + p.stderr  # a failure is not retried unasked
    cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "1", "--retry-failed")
    assert [r["status"] for r in records(out)][-1] == "done"
    assert_resumed(out, sub["cell"])


def assert_resumed(out: Path, cell: str) -> None:
    """The cell's latest job logged that it resumed from a checkpoint past the start."""
    import re

    from lfpo_bench.launch import log_tail

    last = [r for r in records(out) if r["cell"] == cell and r["status"] == "submitted"][-1]
    text = log_tail(last["folder"], last["job_id"], n=400)
    m = re.search(r"resumed \S+ at update (\d+)", text)
    assert m and int(m.group(1)) >= 1, text[-3000:]


@pytest.mark.slow  # worker processes: .ci/run runs it in its launcher tier
def test_a_raising_cell_is_failed_with_its_error_and_the_others_finish(tmp_path):
    plugin = tmp_path / "boom.py"
    plugin.write_text(RAISING)
    sw = spec(tmp_path, ["none", f"{plugin}:Boom"], seeds=(0,))
    out = tmp_path / "s"
    p = cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "2", check=False)
    assert p.returncode == 1
    recs = records(out)
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and "boom: this method always raises" in failed[0]["error"]
    assert "RuntimeError" in failed[0]["traceback"]
    assert [r["status"] for r in recs if r["label"].startswith("none")][-1] == "done"
    assert len(rows(out)) == 1
    status = cli("sweep", "status", str(out)).stdout
    assert "1 done" in status and "1 failed" in status and "boom" in status


def finished_then_last_done_line_dropped(tmp_path: Path):
    """Two cheap cells through local workers, done; returns (sweep file, folder, its rows, the record of the last
    done line, the cell records without that line)."""
    sw = spec(tmp_path, ["none"], seeds=(0, 1))
    out = tmp_path / "s"
    cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "2")
    recs = records(out)
    last_done = max(i for i, r in enumerate(recs) if r["status"] == "done")
    return sw, out, rows(out), recs[last_done], [r for i, r in enumerate(recs) if i != last_done]


@pytest.mark.slow  # two local sweeps: .ci/run runs it in its launcher tier
def test_a_crash_between_merge_and_done_line_merges_once(tmp_path):
    """The supervisor appended a cell's rows but died before its done line: the next start drops those rows
    and merges the cell's file again, so each row lands once."""
    sw, out, before, gone, kept = finished_then_last_done_line_dropped(tmp_path)
    (out / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))  # rows stay: the crash window
    cli("sweep", "--config", str(sw), "--out", str(out), "--launcher", "local", "--jobs", "2")
    assert rows(out) == before
    assert [r["status"] for r in records(out) if r["cell"] == gone["cell"]].count("submitted") == 1  # merged, not rerun


@pytest.mark.slow  # two local sweeps: .ci/run runs it in its launcher tier
def test_a_folder_moved_to_another_machine_without_runs_or_jobs_resumes(tmp_path):
    """A sweep folder copied elsewhere without its runs/ and jobs/ (a commit, a copy to a new machine, a restore
    after a reboot): done cells stay done, the cell that was in flight reruns, each row lands once, even when
    this machine has since given the recorded pid to a live submitit process of its own."""
    sw, out, before, gone, kept = finished_then_last_done_line_dropped(tmp_path)  # that cell was in flight when copied
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "submitit"])
    try:
        for r in kept:
            if r["cell"] == gone["cell"] and r["status"] == "submitted":
                r.update(job_id=str(impostor.pid), boot="another-machine/0")  # a pid from the other boot, alive here
        moved = tmp_path / "moved"
        shutil.copytree(out, moved, ignore=shutil.ignore_patterns("runs", "jobs"))
        (moved / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        status = cli("sweep", "status", str(moved)).stdout
        assert "stopped unfinished" in status and "running" not in status, status
        p = cli("sweep", "--config", str(sw), "--out", str(moved), "--launcher", "local", "--jobs", "2", timeout=300)
        assert impostor.poll() is None  # it was neither waited for nor touched
    finally:
        impostor.kill()
    assert "2/2 cells done" in p.stdout
    assert rows(moved).keys() == before.keys()
    sts = [r["status"] for r in records(moved) if r["cell"] == gone["cell"]]
    assert sts == ["submitted", "interrupted", "submitted", "done"], sts
    other = [r["status"] for r in records(moved) if r["cell"] != gone["cell"]]
    assert other == ["submitted", "done"], other  # the done cell is not rerun


def test_a_pid_recorded_on_another_boot_is_never_read_as_a_live_job(tmp_path):
    from lfpo_bench.launch import _local_alive, this_boot

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    try:
        wait_for(lambda: b"submitit" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), what="the process to start")
        assert _local_alive(str(proc.pid), tmp_path / "run", this_boot())
        assert _local_alive(str(proc.pid), tmp_path / "run", None)  # a record from before boots were written
        assert not _local_alive(str(proc.pid), tmp_path / "run", "another-machine/" + this_boot().split("/")[-1])
        assert not _local_alive(str(proc.pid), tmp_path / "run", this_boot().split("/")[0] + "/an-earlier-boot")
    finally:
        proc.kill()
        proc.wait()
    assert not _local_alive(str(proc.pid), tmp_path / "run", this_boot())


def test_launcher_settings_are_checked_and_reach_the_sbatch_script(tmp_path, monkeypatch):
    from lfpo_bench.launch import LauncherConfig, launcher_config, make_executor

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no SLURM here: the launcher says what is missing
    with pytest.raises(UserError, match="needs `sbatch` on PATH"):
        make_executor(LauncherConfig(kind="slurm"), tmp_path / "jobs", "lfpo-test")
    (tmp_path / "bin").mkdir()
    for tool in ("sbatch", "sacct", "srun"):  # stand-ins: writing the script runs none (a login node has all three)
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / tool).chmod(0o755)

    with pytest.raises(UserError, match="did you mean 'slurm'"):
        launcher_config({}, "slurn", None, "f.yaml")
    with pytest.raises(UserError, match="given twice"):
        launcher_config({"launcher": {"kind": "slurm"}}, "local", None, "f.yaml")
    with pytest.raises(UserError, match="unknown config key"):
        launcher_config({"launcher": {"partiton": "gpu"}}, None, None, "f.yaml")
    with pytest.raises(UserError, match="sbatch options"):
        launcher_config({"launcher": {"sbatch": ["#SBATCH --exclusive"]}}, "slurm", None, "f.yaml")
    with pytest.raises(UserError, match="jobs"):
        launcher_config({}, "local", 0, "f.yaml")
    lc = LauncherConfig(kind="slurm", partition="gpu", account="lab", qos="high", time_min=240, gpus_per_cell=8,
                        cpus_per_task=64, mem_gb=480, constraint="h100", sbatch=("--exclusive", "--nice=10"),
                        setup=("module load cuda/12.4", "source venv/bin/activate"), jobs=4)
    ex = make_executor(lc, tmp_path / "jobs", "lfpo-test")
    text = ex._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--partition=gpu", "--account=lab", "--qos=high", "--time=240", "--gpus-per-node=8",
                 "--cpus-per-task=64", "--mem=491520MB", "--constraint=h100", "--exclusive", "--nice=10"):
        assert f"#SBATCH {line}" in text, (line, text)
    assert "module load cuda/12.4" in text and "source venv/bin/activate" in text
    assert LauncherConfig(kind="local", jobs=2).worker_threads() * 2 <= max(2, os.cpu_count() or 1)


def test_status_of_a_folder_that_is_not_a_sweep_names_the_problem(tmp_path):
    p = cli("sweep", "status", str(tmp_path), check=False)
    assert p.returncode == 2 and "not a sweep folder" in p.stderr + p.stdout


@pytest.mark.slow  # two tunes: .ci/run runs it in its launcher tier
def test_tune_dispatches_trials_and_the_final_phase_through_the_launcher(tmp_path, monkeypatch):
    """Every cell of every trial and of the final phase is a local job, and the outcome is the inline one:
    the same trial scores, the same choices, the same final rows."""
    import yaml
    from test_tune import SPEC

    from lfpo_bench.tune import tune

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LFPO_BENCH_PROGRESS", "0")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(SPEC))
    _, chosen_a, recs_a = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "inline"), show_progress=False)
    _, chosen_b, recs_b = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "local"), show_progress=False,
                               launcher="local", jobs=2)
    assert recs_a == recs_b and chosen_a == chosen_b
    folders = sorted((tmp_path / "local").rglob("cells.jsonl"))
    assert len(folders) == 3  # trial0, trial1, final
    for f in folders:
        recs = records(f.parent)
        assert recs and all(r.get("launcher") == "local" and r.get("job_id") for r in recs), f
    assert rows(tmp_path / "inline" / "final") == rows(tmp_path / "local" / "final")
