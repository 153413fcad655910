"""Data parallelism and sharding through `accelerate launch` on CPU (gloo).

- DDP and FSDP2: one update with 2 ranks x B prompts gives the same parameters as 1 rank x 2B, and
  data-parallel evaluation gives the same rows;
- FSDP lock-step: ranks that keep different numbers of groups, threshold decoding (data-dependent passes),
  an odd number of evaluation problems, LoRA adapters and a method with a data-dependent pass count still
  reproduce the single-process run;
- FSDP resume continues bit-identically;
- unit tests of the pieces: loss weights, the lock-step protocol in the sampler, config refusals.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfpo_bench.decoding import Decoding

pytest.importorskip("accelerate", reason="needs the `dist` extra: pip install 'lfpo-bench[dist]'")

CONFIGS = Path(__file__).resolve().parents[1] / "lfpo_bench" / "accelerate"
ENV = {"LFPO_BENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


SHARDED = ["fsdp", pytest.param("deepspeed_zero2", marks=pytest.mark.deepspeed), pytest.param("deepspeed_zero3", marks=pytest.mark.deepspeed)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(engine: str, nproc: int) -> list[str]:
    if engine == "single":
        return [sys.executable]
    if engine.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="needs the `deepspeed` extra: pip install 'lfpo-bench[deepspeed]'")
    acc = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    # a fresh rendezvous port per launch: the previous launch's port may not be released yet
    common = ["--num_processes", str(nproc), "--main_process_port", str(_free_port())]
    if engine != "ddp":  # a shipped launch config: fsdp.yaml, deepspeed_zero2.yaml, deepspeed_zero3.yaml
        return [acc, "launch", "--config_file", str(CONFIGS / f"{engine}.yaml"), *common]
    # on a CPU-only machine --multi_gpu starts torchrun processes and PartialState picks the gloo backend
    return [acc, "launch", "--multi_gpu", *common, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _launch(engine: str, args: list[str], cwd, nproc: int = 2, env: dict | None = None):
    cmd = [*_launcher(engine, nproc), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV, **(env or {})}, cwd=cwd, timeout=600)
    if p.returncode:
        (Path(cwd) / "launch.stderr").write_text(p.stderr)
        errors = [ln for ln in p.stderr.splitlines() if "Error" in ln or "rank1" in ln or "│" in ln]
        pytest.fail(f"launch failed (full log in {cwd}/launch.stderr):\n" + "\n".join(errors[-40:]))
    return p


def _run(out, engine: str, prompts: int, extra: list[str], env: dict | None = None):
    args = ["-m", "lfpo_bench.cli", "run", "--task", "sudoku4", "--model", "tiny", "--set", "train.select=last",
            "--out-dir", str(out), "--run-id", "r", "--set", f"train.prompts_per_update={prompts}", "--set", "train.group_size=4",
            "--set", "train.val_limit=7", "--set", "train.lr=1e-3", *extra]
    _launch(engine, args, out.parent, env=env)
    return out / "r"


def _rows(d):
    return [json.loads(x) for x in (d / "rows.jsonl").read_text().splitlines()]


def _same_rows(a, b):
    key = lambda r: (r["stage"], r["decoding"], r["problem_ids"], r["scores"], r["nfe"])  # noqa: E731
    assert [key(r) for r in _rows(a)] == [key(r) for r in _rows(b)]


# LFPO with mu=2: the second inner iteration contrasts the current policy with the EMA "old" policy, which the
# policy bank swaps into each rank's shard/partition, so a swap the engine does not see changes the result
EQUAL = ["--method", "lfpo", "--updates", "1", "--steps", "2", "--limit", "16", "--set", "train.micro_batch=8",
         "--set", "train.val_every=0", "--set", "mu=2"]


@pytest.fixture(scope="module")
def single_equal(tmp_path_factory):
    # module-scoped: runs before conftest's per-test cache variable is set, so name the same cache here
    cache = os.environ.get("LFPO_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    return _run(tmp_path_factory.mktemp("single") / "one", "single", 4, EQUAL, env={"LFPO_BENCH_CACHE": cache})


@pytest.mark.parametrize("engine", ["ddp", *SHARDED])
def test_two_ranks_equal_one_rank_with_twice_the_batch(single_equal, tmp_path, engine):
    from safetensors.torch import load_file

    one = single_equal
    two = _run(tmp_path / "two", engine, 2, EQUAL)
    a, b = load_file(one / "checkpoint" / "model.safetensors"), load_file(two / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    # two AdamW steps at lr 1e-3 move weights by up to 2e-3; reduction order alone moves near-zero-gradient
    # entries by ~3e-5 (Adam normalises them), while a policy swap the engine missed moves them by ~1e-3
    from lfpo_bench.models.loader import load_model

    start = load_model("tiny", quiet=True).module.state_dict()
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-3  # the update really moved the weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=0), k
    _same_rows(one, two)
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["world_size"] == 2


def test_data_parallel_eval_writes_the_single_process_rows_once(tmp_path):
    """`lfpo-bench eval` under accelerate launch: problems sharded (15 split 8/7), rank 0 writes every row once."""
    args = ["-m", "lfpo_bench.cli", "eval", "--task", "sudoku4", "--model", "tiny", "--steps", "2,4", "--threshold", "0.9",
            "--limit", "15"]
    _launch("single", [*args, "--out", str(tmp_path / "one.jsonl")], tmp_path)
    p = _launch("ddp", [*args, "--out", str(tmp_path / "two.jsonl")], tmp_path)
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 3
    key = lambda r: (r["decoding"], r["steps"], r["problem_ids"], r["scores"], r["nfe"])  # noqa: E731
    assert [key(r) for r in one] == [key(r) for r in two]
    assert len(two[0]["problem_ids"]) == 15 and two[0]["config"]["world_size"] == 2
    assert p.stdout.count("rows written to") == 1  # one report, from rank 0


UNEVEN = ["--method", "trace_rl", "--updates", "2", "--steps", "2", "--threshold", "0.9", "--limit", "15",
          "--set", "train.micro_batch=4", "--set", "train.val_every=1", "--set", "train.lora_r=4",
          "--set", "train.lora_dropout=0", "--set", "acc_low=0.4"]


@pytest.fixture(scope="module")
def single_uneven(tmp_path_factory):
    cache = os.environ.get("LFPO_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    return _run(tmp_path_factory.mktemp("single_uneven") / "one", "single", 8, UNEVEN, env={"LFPO_BENCH_CACHE": cache})


@pytest.mark.parametrize("engine", ["fsdp", pytest.param("deepspeed_zero3", marks=pytest.mark.deepspeed)])
def test_lockstep_with_uneven_ranks_reproduces_one_process(single_uneven, tmp_path, engine):
    """Sharded parameters make every forward a collective. trace_rl drops groups outside its accuracy band,
    so the ranks keep different numbers of micro-batches (micro_batch = group size) and the one with fewer
    runs zero-weight passes; its replay pass count depends on the data; threshold decoding makes the
    sampler's pass count data-dependent; 15 problems split 8/7; LoRA adapters (reference = adapters off)."""
    from safetensors.torch import load_file

    one = single_uneven
    two = _run(tmp_path / "two", engine, 4, UNEVEN)
    log = [json.loads(x) for x in (two / "log.jsonl").read_text().splitlines()]
    assert sum(e.get("pad_passes", 0) for e in log) > 0, "the uneven path was not exercised"
    log1 = [json.loads(x) for x in (one / "log.jsonl").read_text().splitlines()]
    assert [e.get("groups_used") for e in log] == [e.get("groups_used") for e in log1]
    a = load_file(one / "checkpoint" / "adapter_model.safetensors")
    b = load_file(two / "checkpoint" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    _same_rows(one, two)
    assert {r["decoding"] for r in _rows(two)} == {"fixed", "threshold=0.9"}


@pytest.mark.parametrize("engine", SHARDED)
def test_resume_continues_bit_identically(tmp_path, engine):
    worker = Path(__file__).resolve().parent / "dist_resume_worker.py"
    _launch(engine, [str(worker), str(tmp_path), "lfpo"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine"] == engine.split("_")[0] and summary["world_size"] == 2
    if engine == "deepspeed_zero2":  # ZeRO-2 keeps whole parameters; it partitions gradients and optimiser state
        assert summary["stage"] == 2
    else:
        assert summary["sharded_params"] > 0, "the model was not sharded"
    assert summary["updates"] == [0, 0, 1, 2, 3]
    p = torch.load(tmp_path / "params.pt")
    for k, v in p["straight"].items():
        assert torch.equal(v, p["resumed"][k]), k


# ---- units -------------------------------------------------------------------------------------------


def test_loss_weights_make_the_rank_average_the_global_mean():
    from lfpo_bench.trainer import loss_weights

    # rank 0 keeps micro-batches of 4 and 2 rows, rank 1 one of 2 rows: 8 rows in all, gradients averaged over 2
    r0, r1 = loss_weights([4, 2], 8, 2), loss_weights([2], 8, 2)
    assert r0 == [1.0, 0.5] and r1 == [0.5]
    # averaged over the ranks, each micro-batch's weight is its share of the 8 rows
    assert [w / 2 for w in r0 + r1] == [4 / 8, 2 / 8, 2 / 8]
    assert loss_weights([3, 1], 4, 1) == [0.75, 0.25]  # one process: the share of rows


class _OtherRankNeeds:
    """A stand-in for the other ranks: they keep going for ``rounds`` rounds."""

    def __init__(self, rounds: int):
        self.rounds, self.seen = rounds, 0

    def any(self, flag: bool) -> bool:
        self.seen += 1
        return flag or self.seen <= self.rounds


@pytest.mark.parametrize("decoding", [dict(steps=8), dict(steps=32, threshold=0.5), dict(steps=8, stop_at_eos=True)])
def test_lockstep_adds_dummy_forwards_without_changing_the_output(tiny_random, decoding):
    from lfpo_bench.distributed import Lockstep
    from lfpo_bench.sampler import generate

    lm = tiny_random
    ids = torch.randint(4, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    calls = []
    lm.module.register_forward_pre_hook(lambda m, a: calls.append(1))
    kw = dict(gen_length=32, block_length=8, **decoding)
    alone = generate(lm, ids, decoding=Decoding(**kw))
    n_alone = len(calls)
    other = _OtherRankNeeds(n_alone + 5)
    calls.clear()
    stepped = generate(lm, ids, decoding=Decoding(**kw), lockstep=Lockstep(other))
    assert torch.equal(alone.sequences, stepped.sequences)
    assert torch.equal(alone.nfe_per_sample, stepped.nfe_per_sample) and alone.steps == stepped.steps
    assert len(calls) == n_alone + 5  # this rank ran 5 dummy passes while the other was still going
    assert other.seen == n_alone + 5 + 1  # one flag per round, plus the final round where everyone is done


def test_trajectory_replay_over_every_step_equals_replay_over_used_steps(tiny_random):
    from lfpo_bench.likelihood import trajectory_logps

    lm = tiny_random
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 20, (2, 5), generator=g)
    completion = torch.randint(4, 20, (2, 8), generator=g)
    commit = torch.tensor([0, 1, 5, 7])[torch.randint(4, (2, 8), generator=g)]  # passes 2, 3, 4 and 6 unused
    kw = dict(mask_id=lm.mask_id, shrink=2)
    a = trajectory_logps(lm, ids, torch.ones_like(ids), completion, commit, **kw)
    calls = []
    lm.module.register_forward_pre_hook(lambda m, a: calls.append(1))
    b = trajectory_logps(lm, ids, torch.ones_like(ids), completion, commit, n_steps=8, **kw)
    assert len(calls) == 4  # every merged step of 8 passes, used or not (merged step 1 = passes 2, 3 is unused)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("engine,env,match", [
    ("fsdp", {"FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ("fsdp", {"FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "TRANSFORMER_BASED_WRAP"),
    ("fsdp", {"FSDP_VERSION": "2", "FSDP_ACTIVATION_CHECKPOINTING": "true"}, "gradient_checkpointing"),
    ("fsdp", {"FSDP_VERSION": "2", "ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed_precision: \"no\""),
    ("fsdp", {"FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: false"),
    ("fsdp", {"FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "false"}, "hide the old/EMA policy swaps"),
    ("deepspeed", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, "stage 1 is not supported"),
    ("deepspeed", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"},
     "offload_optimizer_device: none"),
    ("deepspeed", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed precision"),
    ("deepspeed", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"}, "zero3_init_flag: false"),
])
def test_unsupported_launch_settings_are_refused_with_the_fix(engine, env, match):
    from lfpo_bench.distributed import deepspeed_config, fsdp_plan
    from lfpo_bench.types import UserError

    with pytest.raises(UserError, match=match):
        (fsdp_plan if engine == "fsdp" else deepspeed_config)(env)


def test_fsdp_plan_reads_the_accelerate_config():
    from lfpo_bench.distributed import fsdp_plan, wrap_units
    from lfpo_bench.models.loader import new_tiny

    plan = fsdp_plan({"FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true"})
    assert fsdp_plan({"FSDP_VERSION": "2", "FSDP_TRANSFORMER_CLS_TO_WRAP": "Block, Other"})["classes"] == ["Block", "Other"]
    lm = new_tiny(0, d_model=32, n_layers=3, n_heads=2, max_position_embeddings=64)
    assert [type(m).__name__ for m in wrap_units(lm.module, plan)] == ["Block"] * 3  # from _no_split_modules
    assert wrap_units(lm.module, {**plan, "wrap": "NO_WRAP"}) == []
    from lfpo_bench.types import UserError

    with pytest.raises(UserError, match="no module of class"):
        wrap_units(lm.module, {**plan, "classes": ["DecoderLayer"]})


def test_deepspeed_config_from_the_launch_environment_and_a_config_file(tmp_path):
    from lfpo_bench.distributed import deepspeed_config
    from lfpo_bench.types import UserError

    two = deepspeed_config({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})
    assert two["zero_optimization"] == {"stage": 2}
    assert (two["train_micro_batch_size_per_gpu"], two["gradient_accumulation_steps"]) == (1, 1)  # one engine step per update step
    f = tmp_path / "ds.json"
    f.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_max_live_parameters": 1e9, "stage3_param_persistence_threshold": 1e5},
                             "train_micro_batch_size_per_gpu": "auto"}))
    three = deepspeed_config({"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(f)})
    z = three["zero_optimization"]
    assert z["stage"] == 3 and z["stage3_max_live_parameters"] == 1e9  # the user's settings are kept ...
    # ... except those that would keep gathered parameters between forwards, hiding policy swaps
    assert z["stage3_param_persistence_threshold"] == 0 and z["stage3_max_reuse_distance"] == 0
    assert three["train_micro_batch_size_per_gpu"] == 1
    f.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the DeepSpeed config"):
        deepspeed_config({"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(f)})
