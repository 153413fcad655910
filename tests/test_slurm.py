"""``--launcher slurm`` against a real single-node SLURM cluster with accounting (no mock): start one with
``bash bench/slurm_cluster.sh start`` and export the ``SLURM_CONF`` it prints; ``.ci/run`` does both.

Checked: rows equal to the inline run's; a supervisor killed mid-sweep and rerun submits no cell twice and
loses nothing; ``scancel`` of a training cell then ``--retry-failed`` resumes it from its checkpoint; a raising
cell is failed with its error while the others finish; ``sweep status`` shows queued, running, done and
failed cells."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import RAISING, assert_resumed, cli, records, rows, spec, wait_for

pytestmark = pytest.mark.slurm
pytest.importorskip("submitit")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not os.environ.get("SLURM_CONF"):
        pytest.skip("no cluster: run `bash bench/slurm_cluster.sh start` and export the SLURM_CONF it prints")
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip(), f"SLURM_CONF is set but the cluster does not answer: {p.stderr}"


def slurm_spec(tmp_path, methods, **kw) -> Path:
    p = spec(tmp_path, methods, **kw)
    d = json.loads(p.read_text())
    d["launcher"] = {"kind": "slurm", "poll_s": 1, "time_min": 10, "cpus_per_task": 1}
    p.write_text(json.dumps(d))
    return p


def popen_sweep(*args):
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "lfpo_bench.cli", "sweep", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def submitted(out: Path) -> list[dict]:
    return [r for r in records(out) if r["status"] == "submitted"] if (out / "cells.jsonl").exists() else []


def test_slurm_rows_equal_inline_and_a_killed_supervisor_resubmits_nothing(tmp_path):
    sw = slurm_spec(tmp_path, ["none", "diffu_grpo"])
    out = tmp_path / "slurm"
    sup = popen_sweep("--config", str(sw), "--out", str(out))
    try:
        subs = wait_for(lambda: submitted(out) if len(submitted(out)) == 4 else [], what="4 submitted cells")
        # 2 CPUs, 1 per job: two run, two wait in the queue
        status = wait_for(lambda: (lambda s: s if "queued" in s and "running" in s else "")(cli("sweep", "status", str(out)).stdout),
                          timeout=60, what="status with queued and running cells")
        assert all(r["job_id"] in status for r in subs)
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait()
    finally:
        if sup.poll() is None:
            sup.kill()
    cli("sweep", "--config", str(sw), "--out", str(out))  # reattaches: waits for the jobs, merges
    recs = records(out)
    for c in {r["cell"] for r in recs}:
        sts = [r["status"] for r in recs if r["cell"] == c]
        assert sts == ["submitted", "done"], (c, sts)  # never submitted twice, each merged once
    inline = tmp_path / "inline"
    plain = json.loads(sw.read_text())
    plain.pop("launcher")
    (tmp_path / "plain.yaml").write_text(json.dumps(plain))
    cli("sweep", "--config", str(tmp_path / "plain.yaml"), "--out", str(inline))
    a, b = rows(inline), rows(out)
    assert a.keys() == b.keys() and len(a) == 6
    for k in a:
        assert a[k] == b[k], k
    assert "4 done" in cli("sweep", "status", str(out)).stdout


def test_scancel_then_retry_failed_resumes_from_the_checkpoint(tmp_path):
    sw = slurm_spec(tmp_path, ["diffu_grpo"], updates=60, seeds=(0,))  # long enough to be cancelled mid-training
    out = tmp_path / "s"
    sup = popen_sweep("--config", str(sw), "--out", str(out))
    try:
        sub = wait_for(lambda: submitted(out), what="a submitted cell")[0]
        wait_for(lambda: (out / "runs" / sub["cell"] / "trainer_state.pt").exists(), what="the cell's first checkpoint")
        subprocess.run(["scancel", sub["job_id"]], check=True)
        assert sup.wait(timeout=120) == 1  # the supervisor records the cancelled cell as failed and exits 1
    finally:
        if sup.poll() is None:
            sup.kill()
    failed = [r for r in records(out) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["state"].startswith("CANCELLED"), failed
    assert "failed" in cli("sweep", "status", str(out)).stdout
    p = cli("sweep", "--config", str(sw), "--out", str(out), "--retry-failed")
    assert "1/1 cells done" in p.stdout
    assert_resumed(out, sub["cell"])
    assert len(rows(out)) == 2


def test_a_raising_cell_fails_with_its_error_and_the_others_finish(tmp_path):
    plugin = tmp_path / "boom.py"
    plugin.write_text(RAISING)
    sw = slurm_spec(tmp_path, ["none", f"{plugin}:Boom"], seeds=(0,))
    out = tmp_path / "s"
    p = cli("sweep", "--config", str(sw), "--out", str(out), check=False)
    assert p.returncode == 1
    failed = [r for r in records(out) if r["status"] == "failed"]
    assert len(failed) == 1 and "boom: this method always raises" in failed[0]["error"]
    assert len(rows(out)) == 1
    status = cli("sweep", "status", str(out)).stdout
    assert "1 done" in status and "1 failed" in status and "boom" in status
