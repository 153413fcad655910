"""``lfpo-bench run``: evaluate the starting policy, train one method, evaluate the selected checkpoint over
the decoding sweep, and write rows, logs and the checkpoint under ``results/runs/<id>/``."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import build, load_file, parse_sets, split_overrides
from .evaluate import decoding_grid, decoding_rule, evaluate, whole_canvas
from .provenance import config_hash, git_sha
from .registry import METHODS
from .results import append_rows, read_rows
from .runner import check_positive, make_task, resolve_device
from .timing import TimingConfig, attach
from .trackers import make_trackers
from .trainer import TrainConfig, Trainer, TrainResult
from .types import ResultRow, UserError

log = logging.getLogger(__name__)


@dataclass
class RunArgs:
    method: str
    task: str
    model: str | None = None
    updates: int | None = None
    config: str | None = None  # YAML with optional sections method:, train:, eval:
    sets: list[str] = field(default_factory=list)
    seed: int = 0
    out_dir: str = "results/runs"
    run_id: str | None = None
    device: str = "auto"
    data: str | None = None
    eval_steps: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    gen_lengths: list[int] = field(default_factory=list)  # evaluation gen lengths (default: the task's)
    block_lengths: list[int] = field(default_factory=list)  # evaluation block lengths (default: the task's)
    temperature: float | None = None  # evaluation temperature (None: the model family's own rule)
    remasking: str | None = None  # evaluation remasking (None: the family's)
    rule: dict = field(default_factory=dict)  # further decoding-rule options (schedule, top_p, top_k, *_eos_*_inf)
    use_cache: bool = False
    steps_ratio: float | None = None  # evaluation steps = ratio x gen length (overrides eval_steps), e.g. 0.5
    split: str | None = None  # evaluation split (default: the task's test split)
    eval_limit: int | None = None
    batch_size: int = 128
    eval_before: bool = True  # also evaluate the starting policy (sweeps use a `none` cell instead)
    resume: bool = False
    show_progress: bool = True
    report_to: str = "none"  # experiment trackers: none | tensorboard | wandb (comma-separated)
    timing: TimingConfig = field(default_factory=TimingConfig)  # the timing pass (reps=0: none; sweeps time at the end)


@dataclass
class ResolvedRun:
    task: Any
    method: Any
    train: TrainConfig
    model: str
    run_id: str
    config: dict


def resolve(a: RunArgs, extra_overrides: dict | None = None) -> ResolvedRun:
    """Task, method (with its config) and train config from defaults, the config file and ``--set``."""
    task = make_task(a.task, a.data)
    method_cls = METHODS.get(a.method)
    file_cfg = load_file(a.config) if a.config else {}
    unknown = set(file_cfg) - {"method", "train", "model"}
    if unknown:
        raise UserError(f"{a.config}: unknown top-level key(s) {sorted(unknown)}; use method:, train: and model:")
    sets = split_overrides({**parse_sets(a.sets), **(extra_overrides or {})}, {"method": method_cls.Config, "train": TrainConfig})
    task_defaults = method_cls.task_defaults(task.name) if hasattr(method_cls, "task_defaults") else {}
    mvals = {**task_defaults, **(file_cfg.get("method") or {}), **sets["method"]}
    method = method_cls(build(method_cls.Config, mvals, "method."))
    tvals = {**getattr(task, "train_defaults", {}), **(file_cfg.get("train") or {}), **sets["train"], "seed": a.seed}
    if a.updates is not None:
        tvals["updates"] = a.updates
    if not getattr(method, "trains", True):
        tvals["updates"] = 0
    train = build(TrainConfig, tvals, "train.")
    model = a.model or file_cfg.get("model") or task.default_model
    cfg = {"method": method.name, "method_config": asdict(method.cfg), "task": task.name, "model": model,
           "train": asdict(train), "data": a.data}
    run_id = a.run_id or f"{method.name}-{task.name}-s{a.seed}-{config_hash(cfg)[:8]}"
    return ResolvedRun(task, method, train, model, run_id, cfg)


def _folder_only(data: str | None) -> str | None:
    """``--data`` for the training task (humaneval trains on mbpp): a folder applies, a file is the
    evaluation task's own."""
    return data if data and Path(data).expanduser().is_dir() else None


def preflight(a: RunArgs, r: ResolvedRun):
    """Everything a run will need, checked before any model work: settings in range, the rollout schedule,
    every data split it reads (train, validation, evaluation), the output folder, the trackers. Returns the
    task RL trains on (its splits loaded)."""
    from .results import check_output_dir
    from .sampler import check_schedule
    from .trackers import check_report_to

    check_positive(**{"--limit": a.eval_limit, "--batch-size": a.batch_size})
    check_report_to(a.report_to)
    a.timing.check()
    check_output_dir(a.out_dir)
    task = r.task
    train_task = make_task(task.train_task, _folder_only(a.data)) if task.train_task else task
    if getattr(r.method, "trains", True) and r.train.updates > 0:
        L = r.train.rollout_gen_length or train_task.gen_length
        blk = r.train.rollout_block_length or min(train_task.block_length, L)
        steps = r.train.rollout_steps or train_task.steps
        try:
            check_schedule(L, blk, steps, None)
        except ValueError as e:
            raise UserError(f"rollout decoding (train.rollout_steps={steps}, train.rollout_gen_length={L}, "
                            f"train.rollout_block_length={blk}): {e}") from None
        for split in (train_task.train_split, train_task.val_split):
            if not train_task.load(split):
                raise UserError(f"task {train_task.name!r} has no examples in split {split!r}")
    task.load(a.split or task.eval_split)
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


def run(a: RunArgs) -> RunResult:
    """See the module docstring. Under ``accelerate launch`` every rank runs this; rank 0 alone writes."""
    from .distributed import world
    from .models.adapters import prepare_for_training
    from .models.loader import load_model, save_model

    r = resolve(a)
    task, method = r.task, r.method
    train_task = preflight(a, r)
    dist = world()
    device = resolve_device(a.device)
    run_dir = Path(a.out_dir) / r.run_id
    rows_path = run_dir / "rows.jsonl"
    if rows_path.exists() and not a.resume:
        raise UserError(f"{run_dir} already holds a finished or partial run; pass --resume to continue it or --run-id NAME")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**r.config, "git_sha": git_sha(), "seed": a.seed, "world_size": dist.world_size,
                                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2))
    with dist.main_first():  # a missing cached tiny model is pretrained once, not by every rank at once
        lm = load_model(r.model, task=task, device=device, quiet=not a.show_progress, load_in_4bit=r.train.load_in_4bit)
    model_name = lm.name if r.model == "tiny" else r.model
    rule = decoding_rule(lm.profile, temperature=a.temperature, remasking=a.remasking, **a.rule)
    canvas = whole_canvas(lm.profile)  # Dream/DiffuCoder rank over the whole canvas unless a block length is given
    decodings = [d for L in (a.gen_lengths or [None]) for blk in (a.block_lengths or [None])
                 for d in decoding_grid(task, gen_length=L, block_length=blk or ((L or task.gen_length) if canvas else None),
                                        thresholds=a.thresholds,
                                        steps=[max(1, int((L or task.gen_length) * a.steps_ratio))] if a.steps_ratio else (a.eval_steps or None),
                                        use_cache=a.use_cache, **rule)]
    extra = {"run": r.config}

    def rows_for(stage: str, ckpt: str) -> list[ResultRow]:
        rows = evaluate(lm, task, decodings, split=a.split, seed=a.seed, batch_size=a.batch_size, limit=a.eval_limit,
                        method=method.name, model_name=model_name, extra=extra, show_progress=a.show_progress, dist=dist)
        for row in rows:
            row.stage, row.run_id, row.checkpoint = stage, r.run_id, ckpt
            row.config = {**row.config, "stage": stage}
            row.config_hash = config_hash(row.config)
        if a.timing.reps and dist.world_size == 1:  # latency from its own pass, not from the accuracy pass above
            problems = task.load(a.split or task.eval_split)[: a.eval_limit]
            attach(rows, lm, task, decodings, problems, a.timing, batch_size=a.batch_size, seed=a.seed,
                   show_progress=a.show_progress, group=f"{r.run_id}/{stage}")
        return rows

    def write(rows: list[ResultRow]) -> None:
        if dist.is_main:
            append_rows(rows_path, [x.to_dict() for x in rows])

    done = {row["stage"] for row in read_rows(rows_path)}
    after: list[ResultRow] = []
    trains = getattr(method, "trains", True)
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
        after = rows_for("after", ckpt)
        for row in after:
            row.config = {**row.config, "selected_update": result.best_update}
        write(after)
    dist.barrier()
    rows = [ResultRow(**d) for d in read_rows(rows_path)] if dist.is_main else after
    return RunResult([x for x in rows if x.stage == "before"], [x for x in rows if x.stage == "after"], run_dir,
                     result.history, result.best_update, result.seconds, dist.is_main)
