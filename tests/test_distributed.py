"""Data parallelism through `accelerate launch` on CPU (gloo): one update with 2 ranks x B prompts gives the
same parameters as 1 rank x 2B, and data-parallel evaluation gives the same rows."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("accelerate")


def _run(tmp_path, name, nproc, prompts):
    out = tmp_path / name
    args = ["run", "--method", "diffu_grpo", "--task", "sudoku4", "--model", "tiny", "--updates", "1", "--set", "train.select=last",
            "--steps", "2", "--limit", "16", "--out-dir", str(out), "--run-id", "r",
            "--set", f"train.prompts_per_update={prompts}", "--set", "train.group_size=4", "--set", "train.micro_batch=8",
            "--set", "train.val_limit=8", "--set", "train.val_every=0", "--set", "mu=2", "--set", "train.lr=1e-3"]
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "lfpo_bench.cli", *args]
    else:
        launcher = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
        # on a CPU-only machine --multi_gpu starts torchrun processes and PartialState picks the gloo backend
        cmd = [launcher, "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "lfpo_bench.cli", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "r"


def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path):
    from safetensors.torch import load_file

    one = _run(tmp_path, "one", 1, prompts=4)
    two = _run(tmp_path, "two", 2, prompts=2)
    a, b = load_file(one / "checkpoint" / "model.safetensors"), load_file(two / "checkpoint" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    # the update really moved the weights (so the equality is not trivial)
    from lfpo_bench.models.loader import load_model

    start = load_model("tiny", quiet=True).module.state_dict()
    assert any(not torch.allclose(a[k], start[k]) for k in a)
    rows = lambda d: [json.loads(x) for x in (d / "rows.jsonl").read_text().splitlines()]  # noqa: E731
    r1, r2 = rows(one), rows(two)
    assert [(r["stage"], r["problem_ids"], r["scores"]) for r in r1] == [(r["stage"], r["problem_ids"], r["scores"]) for r in r2]
    assert json.loads((two / "config.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("var", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_launch_configs_are_refused_with_the_ddp_fix(monkeypatch, var):
    from lfpo_bench.distributed import world
    from lfpo_bench.types import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(var, "true")
    with pytest.raises(UserError, match="ddp.yaml"):
        world()
