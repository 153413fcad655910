"""One shape for every knob: the Decoding dataclass, the decoding spec and its derived CLI options and sweep keys,
the lazy registry and its protocol checks, model-profile training defaults, and settings given twice."""

import dataclasses
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lfpo_bench import cli
from lfpo_bench.config import merge_layers
from lfpo_bench.decoding import Decoding, DecodingError, DecodingSpec
from lfpo_bench.registry import METHODS, TASKS, Registry
from lfpo_bench.types import UserError

runner = CliRunner()


# ---- Decoding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(gen_length=0, steps=1), dict(gen_length=16, steps=0), dict(gen_length=16, steps=3, block_length=8),
    dict(gen_length=16, steps=4, block_length=0), dict(gen_length=16, steps=32), dict(gen_length=16, steps=4, temperature=-0.1),
    dict(gen_length=16, steps=4, remasking="low_confidance"), dict(gen_length=16, steps=4, schedule="linear"),
    dict(gen_length=16, steps=4, top_p=0.0), dict(gen_length=16, steps=4, top_k=0), dict(gen_length=16, steps=4, threshold=1.5),
    dict(gen_length=16, steps=4, cfg_scale=-1.0), dict(gen_length=16, steps=4, use_cache="yes"),
    dict(gen_length=16, steps=4, use_cache=True, cfg_scale=1.0), dict(gen_length=16.0, steps=4),
])
def test_decoding_refuses_every_invalid_setting_at_construction(kw):
    with pytest.raises(DecodingError):
        Decoding(**kw)


def test_decoding_is_frozen_defaults_one_block_and_records_every_field_with_its_schema():
    d = Decoding(16, 4)
    assert d.block_length == 16 and d.steps_per_block == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.steps = 8
    rec = d.record()
    assert set(rec) == {f.name for f in dataclasses.fields(Decoding)} | {"schema"}
    assert Decoding.from_record(rec) == d
    assert Decoding.from_record({"gen_length": 16, "steps": 4, "block_length": 16}) == d  # schema-1 rows


def test_sampler_takes_only_a_decoding(tiny_random):
    import torch

    from lfpo_bench.sampler import generate

    ids, am = tiny_random.encode_prompts(["12"])
    with pytest.raises(TypeError):
        generate(tiny_random, ids, am, gen_length=8, steps=4)
    out = generate(tiny_random, ids, am, Decoding(8, 4, 4), generator=torch.Generator().manual_seed(0))
    assert out.completion.shape == (1, 8) and out.nfe == 4


# ---- the spec, its CLI options and sweep keys -------------------------------------------------------------
def test_spec_expands_the_grid_against_the_task_and_the_family_rule():
    task = TASKS.get("sudoku4")()
    grid = DecodingSpec(steps=(2, 4), thresholds=(0.9,)).expand(task)
    assert [(d.gen_length, d.steps, d.block_length, d.threshold) for d in grid] == [(16, 2, 16, None), (16, 4, 16, None),
                                                                                  (16, 16, 16, 0.9)]
    assert [d.steps for d in DecodingSpec(steps_ratio=0.5).expand(task)] == [8]
    assert [d.steps for d in DecodingSpec().expand(task)] == list(task.eval_steps)

    class Dreamish:
        recommended = {"gen_length": 16, "block_length": 16, "temperature": 0.2, "remasking": "entropy", "schedule": "dream"}

    d = DecodingSpec(steps=(4,), remasking="low_confidence").expand(task, Dreamish())[0]
    assert (d.temperature, d.remasking, d.schedule) == (0.2, "low_confidence", "dream")  # the user's wins over the family's


def test_spec_refuses_steps_and_steps_ratio_together():
    with pytest.raises(DecodingError, match="steps_ratio"):
        DecodingSpec(steps=(4,), steps_ratio=0.5)


def test_cli_decoding_options_are_derived_from_the_spec_fields():
    for name in ("eval", "run"):
        cmd = typer_command(name)
        params = {p.name for p in cmd.params}
        assert set(DecodingSpec.names()) <= params, set(DecodingSpec.names()) - params


def typer_command(name):
    import typer.main

    group = typer.main.get_command(cli.app)
    return group.commands[name]


def test_sweep_eval_keys_are_the_spec_fields_plus_the_stage_options():
    from lfpo_bench.sweep import EVAL_KEYS, expand

    assert EVAL_KEYS == set(DecodingSpec.names()) | {"limit", "batch_size", "split"}
    with pytest.raises(UserError, match="steps_ratio"):
        expand({"methods": ["none"], "tasks": ["sudoku4"], "eval": {"steps": [2], "steps_ratio": 0.5}})
    with pytest.raises(UserError, match="remasking"):
        expand({"methods": ["none"], "tasks": ["sudoku4"], "eval": {"remasking": "nope"}})


@pytest.mark.parametrize("argv,flag", [
    (["eval", "--task", "sudoku4", "--steps", ""], "--steps"),
    (["eval", "--task", "sudoku4", "--block-length", "0"], "--block-length"),
    (["eval", "--task", "sudoku4", "--steps", "3", "--steps-ratio", "0.5"], "--steps"),
    (["run", "--method", "lfpo", "--task", "sudoku4", "--temperature", "-1"], "--temperature"),
    (["run", "--method", "lfpo", "--task", "sudoku4", "--top-p", "2"], "--top-p"),
])
def test_cli_decoding_errors_name_the_flag_and_start_no_work(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lfpo-bench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and flag in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


# ---- registry --------------------------------------------------------------------------------------------
def test_listing_imports_no_torch():
    code = ("import sys; from typer.testing import CliRunner; from lfpo_bench.cli import app; "
            "r = CliRunner().invoke(app, ['list']); assert r.exit_code == 0, r.output; "
            "assert 'lfpo' in r.output and 'sudoku4' in r.output; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_registry_refuses_objects_outside_the_protocol_and_names_from_the_registration():
    import torch  # noqa: F401 - the method module needs it anyway

    from lfpo_bench.method import Method
    from lfpo_bench.task import Task

    reg = Registry("method", METHODS._check, {}, "lfpo_bench.none")

    class NotAMethod:
        Config = dataclasses.make_dataclass("C", [])

        def loss(self):
            return 0

    with pytest.raises(TypeError, match="subclass"):
        reg.register("x", NotAMethod)

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        mu: int = 1

    class NoLoss(Method):
        Config = Cfg

    with pytest.raises(TypeError, match="loss"):
        reg.register("y", NoLoss)

    class Good(Method):
        Config = Cfg

        def loss(self, ctx, mb, state, it, m, chunk=0):
            return None

    reg.register("good", Good)
    assert Good.name == "good" and reg.get("good") is Good

    class Named(Good):
        name = "other"

    with pytest.raises(ValueError, match="registration names it"):
        reg.register("named", Named)
    treg = Registry("task", TASKS._check, {}, "lfpo_bench.none")
    with pytest.raises(TypeError, match="Task"):
        treg.register("t", type("T", (), {"load": 1, "prompt": 1, "extract": 1, "score": 1}))
    assert treg.register("t2", type("T2", (Task,), {})).name == "t2"


def test_every_builtin_entry_resolves_to_an_object_of_its_registry():
    for reg in (TASKS, METHODS):
        for name in reg.names():
            obj = reg.get(name)
            assert reg._check(obj) is None and obj.name == name, name


def test_per_task_defaults_follow_the_family_not_the_name():
    from lfpo_bench.task import Task

    dg = METHODS.get("diffu_grpo")

    class Sudoku9(Task):  # a new task whose name starts like sudoku's, in no declared family
        name = "sudoku9"

    class Sudoku9InFamily(Task):
        family = "sudoku"

    assert dg.task_defaults(Sudoku9()) == {}
    assert dg.task_defaults(Sudoku9InFamily()) == {"mu": 8}
    assert dg.task_defaults(TASKS.get("gsm8k")()) == {}


# ---- profiles and settings resolution --------------------------------------------------------------------
def test_training_defaults_come_from_the_model_profile_not_the_task():
    from lfpo_bench.train_job import RunArgs, resolve

    tiny = resolve(RunArgs(method="lfpo", task="gsm8k", model="tiny"))
    llada = resolve(RunArgs(method="lfpo", task="gsm8k", model="GSAI-ML/LLaDA-8B-Instruct"))
    assert tiny.train.lr == 1e-4 and tiny.train.group_size == 8
    assert llada.train.lr == 3e-6 and llada.train.group_size == 6
    assert resolve(RunArgs(method="lfpo", task="sudoku4")).train.rollout.steps == 8  # the task's rollout shape


SOURCES = {
    "flag": lambda v: {"updates": v},
    "set": lambda v: {"sets": [f"train.updates={v}"]},
    "file": lambda v: {"config": {"train": {"updates": v}}},
    "cell": lambda v: {"train_values": {"updates": v}},
}


def _args(tmp_path, tag, parts):
    from lfpo_bench.train_job import RunArgs

    kw = {"method": "lfpo", "task": "sudoku4", "out_dir": str(tmp_path / "runs"), "sets": []}
    for name, val in parts:
        d = SOURCES[name](val)
        if "config" in d:
            p = tmp_path / f"{tag}-{name}.yaml"
            p.write_text(json.dumps(d["config"]))
            kw["config"] = str(p)
        elif "sets" in d:
            kw["sets"] += d["sets"]
        else:
            kw.update(d)
    return RunArgs(**kw)


PAIRS = [(a, b) for a in SOURCES for b in SOURCES if a < b]


@pytest.mark.parametrize("a,b", PAIRS)
def test_a_setting_from_two_sources(a, b, tmp_path):
    from lfpo_bench.train_job import resolve

    assert resolve(_args(tmp_path, "same", [(a, 3), (b, 3)])).train.updates == 3  # equal values: fine
    with pytest.raises(UserError) as e:
        resolve(_args(tmp_path, "diff", [(a, 3), (b, 5)]))
    assert "given twice" in str(e.value) and "3" in str(e.value) and "5" in str(e.value)
    with pytest.raises(UserError):  # an invalid value is an error whichever source gives it
        resolve(_args(tmp_path, "bad", [(a, 3), (b, -5)]))
    assert not (tmp_path / "runs").exists()


def test_defaults_are_overridden_and_the_run_records_the_source(tmp_path):
    from lfpo_bench.train_job import resolve

    r = resolve(_args(tmp_path, "src", [("set", 7)]))
    assert r.train.updates == 7 and r.sources["train.updates"] == "--set"
    assert r.sources["train.lr"] == "the tiny model profile"
    r = resolve(_args(tmp_path, "m", []).__class__(method="diffu_grpo", task="sudoku4", sets=["method.mu=2"]))
    assert r.method.cfg.mu == 2 and r.sources["method.mu"] == "--set"  # over the family default mu=8


def test_merge_layers_compares_coerced_values():
    from lfpo_bench.trainer import TrainConfig

    vals, src = merge_layers(TrainConfig, [("a", {"lr": "1e-4"}, False), ("b", {"lr": 0.0001}, False)], "train.")
    assert vals["lr"] == 1e-4 and src["lr"] == "a"


def test_sweep_train_and_train_by_method_disagreeing_is_an_error():
    from lfpo_bench.sweep import expand

    spec = {"methods": ["lfpo"], "tasks": ["sudoku4"], "train": {"lr": 1e-4}, "train_by_method": {"lfpo": {"lr": 3e-4}}}
    with pytest.raises(UserError, match="given twice"):
        expand(spec)
    spec["train_by_method"]["lfpo"]["lr"] = 1e-4
    assert len(expand(spec)) == 1


@pytest.mark.parametrize("value", ["maybe", "2", "[1]"])
def test_booleans_parse_strictly(value):
    import yaml

    from lfpo_bench.config import build
    from lfpo_bench.trainer import TrainConfig

    with pytest.raises(UserError, match="true or false"):
        build(TrainConfig, {"rollout": {"tf32": yaml.safe_load(value)}}, "train.")


# Every spelling of a nested config's key reaches the same field; each mistake is a UserError naming the key.
NESTED_SPELLINGS = [
    {"sets": ["train.rollout.steps=4"]},
    {"sets": ["rollout.steps=4"]},  # the section is implied: only train nests rollout
    {"config": {"train": {"rollout": {"steps": 4}}}},
    {"config": {"train": {"rollout.steps": 4}}},
    {"train_values": {"rollout": {"steps": 4}}},
    {"train_values": {"rollout.steps": 4}},
]


@pytest.mark.parametrize("given", NESTED_SPELLINGS)
def test_a_nested_rollout_key_in_every_spelling_reaches_the_field(given, tmp_path):
    from lfpo_bench.train_job import RunArgs, resolve

    kw = dict(given)
    if "config" in kw:
        p = tmp_path / "c.yaml"
        p.write_text(json.dumps(kw.pop("config")))
        kw["config"] = str(p)
    r = resolve(RunArgs(method="lfpo", task="sudoku4", **kw))
    assert r.train.rollout.steps == 4 and r.train.rollout.batch == 256  # the rest keep their defaults
    assert r.sources["train.rollout.steps"] != "task sudoku4's rollout steps"
    assert r.config["train"]["rollout"]["steps"] == 4  # the recorded config nests it too


@pytest.mark.parametrize("sets,needle", [
    (["train.rollout_steps=4"], "train.rollout.steps"),  # the flat spelling of before names its new key
    (["train.rollout_decoding=method"], "train.rollout.decoding"),
    (["train.rollout.stepz=4"], "rollout.steps"),  # did you mean
    (["train.rollout.steps=0"], "rollout.steps"),
    (["train.rollout.steps=four"], "rollout.steps"),
    (["train.rollout.lora=fused"], "rollout.lora"),
    (["train.rollout.temperature=-1"], "temperature"),
    (["train.rollout=4"], "rollout"),  # a nested config is not a scalar
])
def test_nested_key_mistakes_name_the_key(sets, needle):
    from lfpo_bench.train_job import RunArgs, resolve

    with pytest.raises(UserError) as e:
        resolve(RunArgs(method="lfpo", task="sudoku4", sets=sets))
    assert needle in str(e.value)


def test_a_nested_key_given_twice_differently_is_an_error_and_a_profile_default_gives_way(tmp_path):
    from lfpo_bench.train_job import RunArgs, resolve

    p = tmp_path / "c.yaml"
    p.write_text(json.dumps({"train": {"rollout": {"steps": 8}}}))
    with pytest.raises(UserError, match="given twice"):
        resolve(RunArgs(method="lfpo", task="sudoku4", config=str(p), sets=["rollout.steps=4"]))
    llada = resolve(RunArgs(method="lfpo", task="gsm8k", model="GSAI-ML/LLaDA-8B-Instruct", sets=["rollout.batch=12"]))
    assert llada.train.rollout.batch == 12 and llada.sources["train.rollout.batch"] == "--set"
    assert resolve(RunArgs(method="lfpo", task="gsm8k", model="GSAI-ML/LLaDA-8B-Instruct")).train.rollout.batch == 48


def test_a_sweep_expands_lists_inside_a_nested_config_and_keys_cells_by_them():
    from lfpo_bench.sweep import expand

    cells = expand({"methods": ["lfpo"], "tasks": ["sudoku4"], "train": {"rollout": {"steps": [4, 8], "decoding": "method"}}})
    assert sorted(c.train_cfg["rollout.steps"] for c in cells) == [4, 8]
    assert all(c.train_cfg["rollout.decoding"] == "method" for c in cells) and len({c.id for c in cells}) == 2
    # the nested and the dotted spelling are one cell
    dotted = expand({"methods": ["lfpo"], "tasks": ["sudoku4"], "train": {"rollout.steps": [4, 8], "rollout.decoding": "method"}})
    assert {c.id for c in dotted} == {c.id for c in cells}
    with pytest.raises(UserError, match="rollout.steps"):
        expand({"methods": ["lfpo"], "tasks": ["sudoku4"], "train": {"rollout_steps": 4}})
