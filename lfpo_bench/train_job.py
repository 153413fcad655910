"""``lfpo-bench run``: evaluate the starting policy, train one method, evaluate the selected checkpoint over
the decoding sweep, and write rows, logs and the checkpoint under ``results/runs/<id>/``."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import load_file, make_task, merge_layers, parse_sets, resolve_device, split_overrides
from .decoding import DecodingSpec
from .evaluate import EvalOptions, evaluation_stage
from .provenance import config_hash, git_sha
from .registry import METHODS
from .results import append_rows, read_rows
from .timing import TimingConfig
from .trackers import make_trackers
from .trainer import TrainConfig, Trainer, TrainResult
from .types import ResultRow, UserError

log = logging.getLogger(__name__)


@dataclass
class RunArgs:
    method: str
    task: str
    model: str | None = None
    updates: int | None = None  # the --updates flag (a source of train.updates)
    config: str | None = None  # YAML with optional sections method:, train:, model:
    sets: list[str] = field(default_factory=list)  # --set key=value (strings, parsed as YAML scalars)
    method_values: dict = field(default_factory=dict)  # typed method fields (a sweep cell's)
    train_values: dict = field(default_factory=dict)  # typed train fields (a sweep cell's)
    seed: int = 0
    out_dir: str = "results/runs"
    run_id: str | None = None
    device: str = "auto"
    data: str | None = None
    decoding: DecodingSpec = field(default_factory=DecodingSpec)  # the evaluation settings
    opts: EvalOptions = field(default_factory=lambda: EvalOptions(batch_size=128))  # split, limit, batch size
    eval_before: bool = True  # also evaluate the starting policy (sweeps use a `none` cell instead)
    resume: bool = False
    show_progress: bool = True
    report_to: str = "none"  # experiment trackers: none | tensorboard | wandb (comma-separated)
    timing: TimingConfig = field(default_factory=TimingConfig)  # the timing pass (reps=0: none; sweeps time at the end)
    source: str = "--set"  # how method_values/train_values are named in errors (a sweep: "the sweep cell")


@dataclass
class ResolvedRun:
    task: Any
    method: Any
    train: TrainConfig
    model: str
    run_id: str
    config: dict
    sources: dict = field(default_factory=dict)  # "section.key" -> where the value came from (not in any hash)


def resolve(a: RunArgs) -> ResolvedRun:
    """Task, method (with its config) and train config from their sources, in the one place settings meet.

    Defaults (the method's per-task-family defaults, the model profile's training defaults, the task's rollout
    steps) are overridden by anything the user gives. What the user gives (the config file, ``--set``, a flag, a
    sweep cell) must agree: a key given twice with different values is an error naming both sources. The run's
    ``config.json`` records the source of every value that is not a field default (``sources``)."""
    from .models.profiles import train_defaults

    task = make_task(a.task, a.data)
    method_cls = METHODS.get(a.method)
    file_cfg = load_file(a.config) if a.config else {}
    unknown = set(file_cfg) - {"method", "train", "model"}
    if unknown:
        raise UserError(f"{a.config}: unknown top-level key(s) {sorted(unknown)}; use method:, train: and model:")
    for sec in ("method", "train"):
        if not isinstance(file_cfg.get(sec) or {}, dict):
            raise UserError(f"{a.config}: '{sec}:' must be a mapping of fields to values, got {file_cfg[sec]!r}")
    if file_cfg.get("model") is not None and not isinstance(file_cfg["model"], str):
        raise UserError(f"{a.config}: 'model:' must be a model name or path, got {file_cfg['model']!r}")
    sets = split_overrides(parse_sets(a.sets), {"method": method_cls.Config, "train": TrainConfig})
    fname = f"config file {a.config}"
    model = a.model or file_cfg.get("model") or task.default_model
    if a.model and file_cfg.get("model") and a.model != file_cfg["model"]:
        raise UserError(f"model is given twice with different values: {a.model!r} by --model and {file_cfg['model']!r} by "
                        f"{fname}; keep one of them")
    mvals, msrc = merge_layers(method_cls.Config, [
        (f"{method_cls.__name__}'s default for task family {getattr(task, 'family', '')!r}", method_cls.task_defaults(task), True),
        (fname, file_cfg.get("method") or {}, False),
        ("--set", sets["method"], False),
        (a.source, a.method_values, False),
    ], "method.")
    from .config import build

    method = method_cls(build(method_cls.Config, mvals, "method."))
    family, profile_train = train_defaults(model)
    shape = {"rollout.steps": task.rollout_steps} if getattr(task, "rollout_steps", None) else {}
    tvals, tsrc = merge_layers(TrainConfig, [
        (f"the {family} model profile", profile_train, True),
        (f"task {task.name}'s rollout steps", shape, True),
        (fname, file_cfg.get("train") or {}, False),
        ("--set", sets["train"], False),
        (a.source, a.train_values, False),
        ("--updates", {} if a.updates is None else {"updates": a.updates}, False),
        ("--seed", {"seed": a.seed}, False),
    ], "train.")
    if not method.trains:  # a sweep's train: section applies to every method, `none` included: nothing to train
        tvals["updates"], tsrc["updates"] = 0, f"method {method.name} (does not train)"
    train = build(TrainConfig, tvals, "train.")
    cfg = {"method": method.name, "method_config": asdict(method.cfg), "task": task.name, "model": model,
           "train": asdict(train), "data": a.data}
    run_id = a.run_id if a.run_id is not None else f"{method.name}-{task.name}-s{a.seed}-{config_hash(cfg)[:8]}"
    check_run_id(run_id)
    sources = {**{f"method.{k}": v for k, v in msrc.items()}, **{f"train.{k}": v for k, v in tsrc.items()}}
    return ResolvedRun(task, method, train, model, run_id, cfg, sources)


def check_run_id(run_id: str) -> None:
    """A run id becomes a folder name under --out-dir: no separators, no '..', nothing hidden."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+=,\[\]-]*", run_id) or ".." in run_id:
        raise UserError(f"--run-id {run_id!r}: a run id becomes a folder name; use letters, digits and - _ . + = , [ ] "
                        "(no '/', no '..', not starting with '.')")


def _folder_only(data: str | None) -> str | None:
    """``--data`` for the training task (humaneval trains on mbpp): a folder applies, a file is the
    evaluation task's own."""
    return data if data and Path(data).expanduser().is_dir() else None


def preflight(a: RunArgs, r: ResolvedRun):
    """Everything a run will need, checked before any model work: settings in range, the rollout schedule,
    every data split it reads (train, validation, evaluation), the output folder, the trackers. Returns the
    task RL trains on (its splits loaded)."""
    from .decoding import Decoding
    from .results import check_output_dir
    from .trackers import check_report_to

    a.opts.check()
    check_report_to(a.report_to)
    a.timing.check()
    check_output_dir(a.out_dir)
    task = r.task
    a.decoding.expand(task)  # the evaluation settings, checked before any model work
    train_task = make_task(task.train_task, _folder_only(a.data)) if task.train_task else task
    if r.method.trains and r.train.updates > 0:
        L, blk, steps = r.train.rollout.resolve(train_task)
        try:
            Decoding(L, steps, blk)
        except ValueError as e:
            raise UserError(f"rollout decoding (train.rollout.steps={steps}, train.rollout.gen_length={L}, "
                            f"train.rollout.block_length={blk}): {e}") from None
        for split in (train_task.train_split, train_task.val_split):
            if not train_task.load(split):
                raise UserError(f"task {train_task.name!r} has no examples in split {split!r}")
    task.load(a.opts.split or task.eval_split)
    return train_task


@dataclass
class RunResult:
    before: list[ResultRow]
    after: list[ResultRow]
    run_dir: Path
    history: list[dict]
    best_update: int
    seconds: float
    is_main: bool = True  # False on ranks > 0 of a multi-process run (their rows are not the run's)
    last: list[ResultRow] = dataclasses.field(default_factory=list)  # the last update's rows (trained methods)


def stamp(rows: list[ResultRow], result: TrainResult) -> list[ResultRow]:
    """Which update a trained row's checkpoint is, and what the training cost (counted, ``TrainResult.budget``)."""
    budget = result.budget()
    for row in rows:
        row.config = {**row.config, "selected_update": result.best_update, "last_update": result.last_update,
                      "budget": budget}
    return rows


def run(a: RunArgs) -> RunResult:
    """See the module docstring. Under ``accelerate launch`` every rank runs this; rank 0 alone writes."""
    from .distributed import world

    r = resolve(a)
    train_task = preflight(a, r)
    dist = world()
    device = resolve_device(a.device)
    run_dir = Path(a.out_dir) / r.run_id
    if not dist.is_main:
        return _run_in(a, r, train_task, dist, device, run_dir)
    from .outputs import Lock, claim_folder, on_interrupt, rerun_command

    claim_folder(run_dir, "run", "--out-dir/--run-id")  # new, or a run folder this project wrote
    with Lock(run_dir, "run"):  # a second writer into the same folder is refused, naming this pid
        on_interrupt(f"finished updates are checkpointed in {run_dir}; resume with: {rerun_command('--resume')}")
        return _run_in(a, r, train_task, dist, device, run_dir)


def _run_in(a: RunArgs, r: ResolvedRun, train_task, dist, device, run_dir: Path) -> RunResult:
    from .models.adapters import prepare_for_training
    from .models.loader import load_model, save_model

    task, method = r.task, r.method
    rows_path = run_dir / "rows.jsonl"
    if rows_path.exists() and not a.resume:
        raise UserError(f"{run_dir} already holds a finished or partial run; pass --resume to continue it or --run-id NAME")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**r.config, "sources": r.sources, "git_sha": git_sha(), "seed": a.seed, "world_size": dist.world_size,
                                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2))
    with dist.main_first():  # a missing cached tiny model is pretrained once, not by every rank at once
        lm = load_model(r.model, task=task, device=device, quiet=not a.show_progress, load_in_4bit=r.train.load_in_4bit)
    from .eval_job import model_label

    model_name = model_label(r.model, lm)
    decodings = a.decoding.expand(task, lm.profile)  # the family's own rule where the user gave none
    extra = {"run": r.config}
    opts = dataclasses.replace(a.opts, seed=a.seed)  # the run's seed is its evaluation's sampling seed too

    def rows_for(stage: str, ckpt: str) -> list[ResultRow]:
        rows = evaluation_stage(lm, task, decodings, opts, timing=a.timing, method=method.name, model_name=model_name,
                                extra={**extra, "stage": stage}, dist=dist, show_progress=a.show_progress,
                                group=f"{r.run_id}/{stage}")
        for row in rows:
            row.stage, row.run_id, row.checkpoint = stage, r.run_id, ckpt
        return rows

    def write(rows: list[ResultRow]) -> None:
        if dist.is_main:
            append_rows(rows_path, [x.to_dict() for x in rows])

    done = {row["stage"] for row in read_rows(rows_path)}
    after: list[ResultRow] = []
    trains = method.trains
    if a.eval_before and trains and "before" not in done:
        write(rows_for("before", "start"))
    if trains and "after" in done:  # finished earlier: nothing left to do
        result, ckpt = TrainResult(), str(run_dir / "checkpoint")
    elif trains:
        prepare_for_training(lm, r.train)
        trackers = make_trackers(a.report_to, run_dir, r.config, r.run_id) if dist.is_main else []
        trainer = Trainer(lm, train_task, method, r.train, run_dir, show_progress=a.show_progress, dist=dist, trackers=trackers)
        try:
            result = trainer.fit(resume=a.resume)
        finally:
            for t in trackers:
                t.finish()
        if "last" not in done and result.last is not None and result.best_update != result.last_update:
            dist.load_trainable(lm.module, result.last)  # the policy after the last update, as evaluated
            write(stamp(rows_for("last", "last-update"), result))
        if result.selected is not None:
            dist.load_trainable(lm.module, result.selected)
        ckpt = str(run_dir / "checkpoint")
        full_state = dist.model_state_for_save(lm.module)  # collective under FSDP
        if dist.is_main:
            save_model(lm, ckpt, state_dict=full_state)
            Path(ckpt, "selection.json").write_text(json.dumps({"selected_update": result.best_update, "val_acc": result.best_val,
                                                                "rule": r.train.select}))
    else:  # `none`: the starting policy is the result; nothing to train or save
        result, ckpt = TrainResult(), r.model
    if "after" not in done:
        after = stamp(rows_for("after", ckpt), result) if trains else rows_for("after", ckpt)
        write(after)
        if trains and "last" not in done and result.best_update == result.last_update:
            # the selected checkpoint is the last update's: its rows are the "last" rows too, not evaluated twice
            write([dataclasses.replace(row, stage="last", checkpoint="last-update", config={**row.config, "stage": "last"})
                   for row in after])
    dist.barrier()
    rows = [ResultRow(**d) for d in read_rows(rows_path)] if dist.is_main else after
    return RunResult([x for x in rows if x.stage == "before"], [x for x in rows if x.stage == "after"], run_dir,
                     result.history, result.best_update, result.seconds, dist.is_main, [x for x in rows if x.stage == "last"])
