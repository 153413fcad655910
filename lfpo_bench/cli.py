"""The ``lfpo-bench`` command line: parse, call one work function, print. No logic lives here."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .types import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RLVR benchmark harness for masked diffusion LMs.")
# piped output keeps full tables instead of rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _ints(s: Optional[str], name: str) -> list[int]:
    if not s:
        return []
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{name} takes comma-separated integers, e.g. 2,4,8; got {s!r}") from None


def _floats(s: Optional[str], name: str) -> list[float]:
    if not s:
        return []
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{name} takes comma-separated numbers, e.g. 0.9,0.95; got {s!r}") from None


def decoding_options(fn):
    """Add one CLI option per ``DecodingSpec`` field (flag and help from the field) to a command, and pass the
    command a validated ``decoding=DecodingSpec(...)``: the options are derived from the dataclass, not restated."""
    import functools
    import inspect
    from dataclasses import fields

    from .decoding import DecodingSpec

    py_type = {"int": int, "float": float, "str": str, "bool": bool}
    extra = []
    for f in fields(DecodingSpec):
        kind, flag, help_ = f.metadata["kind"], f.metadata["flag"], f.metadata["help"]
        if kind == "list":
            ann, opt = Optional[str], typer.Option(None, flag, help=help_)
        elif kind == "flag":
            ann, opt = bool, typer.Option(f.default, f"{flag}/--no-{flag[2:]}", help=help_)
        elif kind == "tristate":
            ann, opt = Optional[bool], typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_)
        else:
            base = str(f.type).split("|")[0].strip()
            ann = Optional[py_type[base]] if f.default is None else py_type[base]
            opt = typer.Option(f.default, flag, help=help_)
        extra.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    names = [p.name for p in extra]
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "decoding"]

    @functools.wraps(fn)
    def wrapper(**kw):
        given = {n: kw.pop(n) for n in names}
        lists = {f.name: f.metadata["flag"] for f in fields(DecodingSpec) if f.metadata["kind"] == "list"}
        for n, flag in lists.items():
            raw = given[n]
            if raw is not None and not raw.replace(",", "").strip():
                raise UserError(f"{flag} {raw!r}: empty; give values such as {'0.9' if n == 'thresholds' else '2,4,8'} or omit it")
            given[n] = (_floats if n == "thresholds" else _ints)(raw, flag)
        try:
            spec = DecodingSpec(**given)
        except UserError as e:  # name the flag the user typed, not the field
            msg = str(e)
            for f in fields(DecodingSpec):
                if msg.split(" ")[0] in (f.name, f.name.rstrip("s")):
                    msg = f"{f.metadata['flag']}: {msg}"
                    break
            raise UserError(msg) from None
        return fn(decoding=spec, **kw)

    del wrapper.__wrapped__  # typer must see the wrapper's signature, not fn's
    wrapper.__signature__ = sig.replace(parameters=own + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper


@app.command("list")
def list_cmd() -> None:
    """List tasks (with data source and default settings) and methods (built-in and plugins)."""
    from .registry import METHODS, TASKS

    t = Table(title="tasks")
    for col in ("task", "source", "default model", "splits (train/val/eval)", "L", "steps", "block"):
        t.add_column(col)
    for name in TASKS.names():
        s = TASKS.get(name).summary()
        t.add_row(name, s["source"], s["model"], s["splits"], str(s["gen_length"]), str(s["steps"]), str(s["block"]))
    console.print(t)
    m = Table(title="methods")
    m.add_column("method")
    m.add_column("origin")
    m.add_column("description")
    for name in METHODS.names():  # descriptions from the registry: no method module (nor torch) is imported
        m.add_row(name, METHODS.origin(name), METHODS.describe(name))
    console.print(m)
    for reg in (TASKS, METHODS):
        for name, e in reg.plugin_errors.items():
            err.print(f"[red]plugin {reg.kind} {name!r} failed to load:[/red] {e}")


@app.command()
def pretrain(
    task: str = typer.Option("sudoku4", help="synthetic task to pretrain the tiny model on"),
    steps: Optional[int] = typer.Option(None, help="optimiser steps (default: the task's calibrated value)"),
    seed: Optional[int] = typer.Option(None, help="seed for init, batches and masks"),
    out: Optional[str] = typer.Option(None, help="checkpoint folder (default: the cache, used by --model tiny)"),
) -> None:
    """Pretrain the built-in tiny model with the masked-diffusion SFT objective."""
    from .pretrain import checkpoint_path, default_config, with_overrides
    from .pretrain import pretrain as work

    cfg = with_overrides(default_config(task), steps=steps, seed=seed)
    path = out or checkpoint_path(cfg)
    info = work(cfg, path)
    console.print(f"saved {path}  ({info['seconds']} s, final loss {info['final_loss']:.4f})")


def print_rows(rows, title: str) -> None:
    t = Table(title=title)
    metric_names = sorted({k for r in rows for k in r.metrics})
    timed = all(r.timing.get("request_ms") for r in rows)
    lat = ["ms/request [IQR]", "ms/sample @batch", "ms/NFE"] if timed else ["p50 ms (1 pass)", "p95 ms (1 pass)", "tok/s"]
    for col in ["decoding", "L", "steps", "block", "n", "accuracy", *metric_names, "mean NFE", *lat]:
        t.add_column(col, justify="right")
    for r in rows:
        if timed:
            q, ps = r.timing["request_ms"], r.timing["sample_ms"]
            cells = [f"{q['median']:.2f} [{q['q25']:.2f}-{q['q75']:.2f}]", f"{ps['median']:.3f} @{r.timing['batch_size']}",
                     f"{r.timing['ms_per_nfe'] or 0:.2f}"]
        else:
            cells = [f"{r.latency_ms_p50:.2f}", f"{r.latency_ms_p95:.2f}", f"{r.tokens_per_s:.0f}"]
        t.add_row(
            r.decoding, str(r.gen_length), str(r.steps) if r.decoding == "fixed" else "adaptive", str(r.block_length),
            str(r.n), f"{100 * r.accuracy:.1f}", *[f"{100 * r.metrics.get(k, 0):.1f}" for k in metric_names],
            f"{r.nfe_mean:.2f}", *cells,
        )
    console.print(t)
    if timed:
        r0 = rows[0].timing
        console.print(f"latency: timing pass, median [IQR] over {r0['reps']} rounds after {r0['warmup']} warm-up, settings "
                      f"interleaved; {r0['prompts']} requests at batch 1, one call at batch {r0['batch_size']}; "
                      f"{r0['threads']} threads, load {r0['loadavg'][0]}->{r0['loadavg'][1]}")


def _timing(reps: int, prompts: int, batch: Optional[int]):
    from .timing import TimingConfig

    return TimingConfig(reps=reps, prompts=prompts, batch_size=batch).check()


TIMING_REPS = typer.Option(9, "--timing-reps", help="timing pass: recorded rounds per setting (0 = no timing pass)")
TIMING_PROMPTS = typer.Option(8, "--timing-prompts", help="timing pass: requests timed one at a time per round")
TIMING_BATCH = typer.Option(None, "--timing-batch", help="timing pass: throughput batch (default: --batch-size)")


@app.command("eval")
@decoding_options
def eval_cmd(
    decoding=None,
    task: str = typer.Option(..., help="task name (see `lfpo-bench list`)"),
    model: Optional[str] = typer.Option(None, help="tiny | tiny:<task> | checkpoint folder | hub id (default: the task's)"),
    split: Optional[str] = typer.Option(None, help="split to evaluate (default: the task's eval split)"),
    seed: int = typer.Option(0, help="sampling seed (recorded in every row)"),
    batch_size: int = typer.Option(64, help="prompts per batch"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N problems"),
    n_samples: int = typer.Option(1, help="completions per problem (> 1: pass@k with the unbiased estimator)"),
    out: Optional[str] = typer.Option(None, help="results JSONL (default: results/eval/<time>.jsonl)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    data: Optional[str] = typer.Option(None, help="local data file or folder overriding the public source"),
    timing_reps: int = TIMING_REPS,
    timing_prompts: int = TIMING_PROMPTS,
    timing_batch: Optional[int] = TIMING_BATCH,
) -> None:
    """Evaluate a model on a task at one or more decoding settings; print and save result rows."""
    from .eval_job import EvalArgs, run_eval
    from .evaluate import EvalOptions

    args = EvalArgs(
        task=task, model=model, decoding=decoding,
        opts=EvalOptions(split=split, limit=limit, batch_size=batch_size, seed=seed, n_samples=n_samples),
        out=out, device=device, data=data, timing=_timing(timing_reps, timing_prompts, timing_batch),
    )
    rows, path, is_main = run_eval(args)
    if not is_main:  # under accelerate launch rank 0 alone reports
        return
    print_rows(rows, f"{task} / {rows[0].split} / {rows[0].model}")
    console.print(f"rows written to {path}")


@app.command()
@decoding_options
def run(
    decoding=None,
    method: str = typer.Option(..., help="method name, or path/to/file.py:Class / package.module:Class"),
    task: str = typer.Option(..., help="task name (see `lfpo-bench list`)"),
    model: Optional[str] = typer.Option(None, help="tiny | checkpoint folder | hub id (default: the task's)"),
    updates: Optional[int] = typer.Option(None, help="rollout batches to train on (default: the task's preset)"),
    config: Optional[str] = typer.Option(None, help="YAML file with method:, train: and model: sections"),
    set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set beta=0.5 --set train.lr=1e-4"),
    seed: int = typer.Option(0, help="seed of training and evaluation"),
    split: Optional[str] = typer.Option(None, help="evaluation split (default: the task's test split)"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N test problems"),
    batch_size: int = typer.Option(128, help="evaluation batch size"),
    out_dir: str = typer.Option("results/runs", help="where runs are written"),
    run_id: Optional[str] = typer.Option(None, help="run folder name (default: method-task-seed-confighash)"),
    resume: bool = typer.Option(False, help="continue a run from its last checkpoint"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    data: Optional[str] = typer.Option(None, help="local data file or folder for the evaluation split"),
    report_to: str = typer.Option("none", help="experiment trackers: none | tensorboard | wandb (offline), comma-separated"),
    timing_reps: int = TIMING_REPS,
    timing_prompts: int = TIMING_PROMPTS,
    timing_batch: Optional[int] = TIMING_BATCH,
) -> None:
    """Evaluate the starting policy, train one method, evaluate the selected checkpoint, print before/after."""
    from .evaluate import EvalOptions
    from .train_job import RunArgs
    from .train_job import run as work

    res = work(RunArgs(method=method, task=task, model=model, updates=updates, config=config, sets=set_, seed=seed,
                       decoding=decoding, opts=EvalOptions(split=split, limit=limit, batch_size=batch_size, seed=seed),
                       out_dir=out_dir, run_id=run_id, resume=resume, device=device, data=data,
                       report_to=report_to, timing=_timing(timing_reps, timing_prompts, timing_batch)))
    if not res.is_main:  # under accelerate launch rank 0 alone reports
        return
    print_before_after(res.before, res.after, f"{method} on {task}: before -> after (checkpoint from update {res.best_update})",
                       last=res.last if res.last and res.best_update != res.last[0].config.get("last_update") else ())
    budget = (res.after[0].config.get("budget") if res.after else None) or {}
    if budget:
        console.print(f"budget: {budget['opt_steps']} optimiser steps, {budget['rollout_forwards']} rollout forwards, "
                      f"{budget['forwards']} training forwards, {budget['backwards']} backwards; "
                      f"{budget['skipped_updates']} update(s) without signal skipped")
    console.print(f"train time {res.seconds:.0f} s; rows, log and checkpoint in {res.run_dir}")


def print_before_after(before, after, title: str, last=()) -> None:
    t = Table(title=title)
    timed = all(r.timing.get("request_ms") for r in after)
    key = lambda r: (r.decoding, r.steps)  # noqa: E731
    b = {key(r): r for r in before}
    lst = {key(r): r for r in last}
    for col in ("decoding", "steps", "metric", "before", "after", "delta", *(["last update"] if lst else []), "mean NFE after",
                *(["ms/request after [IQR]"] if timed else [])):
        t.add_column(col, justify="right")
    for r in after:
        r0 = b.get(key(r))
        for name in ["accuracy", *sorted(k for k in r.metrics if k != "selected_update")]:
            va = r.accuracy if name == "accuracy" else r.metrics[name]
            vb = (r0.accuracy if name == "accuracy" else r0.metrics.get(name, float("nan"))) if r0 else float("nan")
            q = r.timing.get("request_ms") or {}
            rl = lst.get(key(r))
            vl = (rl.accuracy if name == "accuracy" else rl.metrics.get(name, float("nan"))) if rl else float("nan")
            t.add_row(r.decoding, str(r.steps) if r.decoding == "fixed" else "adaptive", name, f"{100 * vb:.1f}",
                      f"{100 * va:.1f}", f"{100 * (va - vb):+.1f}", *([f"{100 * vl:.1f}"] if lst else []), f"{r.nfe_mean:.2f}",
                      *([f"{q['median']:.2f} [{q['q25']:.2f}-{q['q75']:.2f}]"] if timed else []))
    console.print(t)


LAUNCHER_HELP = "where cells run: inline (here, one by one) | local (--jobs worker processes) | slurm (a job per cell)"


@app.command()
def sweep(
    action: Optional[str] = typer.Argument(None, help="'status' to show a sweep folder's cells (lfpo-bench sweep status DIR)"),
    folder: Optional[str] = typer.Argument(None, help="with status: the sweep folder"),
    config: Optional[str] = typer.Option(None, "--config", help="sweep YAML (see docs/sweeps.md)"),
    out: Optional[str] = typer.Option(None, help="sweep folder (default: results/sweeps/<name>)"),
    retry_failed: bool = typer.Option(False, help="rerun (resubmit) cells recorded as failed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    report_to: str = typer.Option("none", help="experiment trackers for every cell: none | tensorboard | wandb"),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP + " (default: the file's launcher:, else inline)"),
    jobs: Optional[int] = typer.Option(None, help="--launcher local: worker processes at once; slurm: array parallelism"),
) -> None:
    """Run every cell of a sweep (methods x tasks x models x seeds x config values), resumably."""
    if action is not None:
        if action != "status":
            raise UserError(f"sweep takes --config FILE, or 'status DIR'; got {action!r}")
        if not folder:
            raise UserError("sweep status needs the sweep folder: lfpo-bench sweep status results/sweeps/NAME")
        from .launch import status_table

        console.print(status_table(folder), markup=False, highlight=False)
        return
    if not config:
        raise UserError("sweep needs --config FILE (a sweep YAML or a preset name), or 'status DIR'")
    from .sweep import sweep as work

    out_dir, cells, state = work(config, out=out, device=device, retry_failed=retry_failed, report_to=report_to,
                                 launcher=launcher, jobs=jobs)
    console.print(f"{len(state.done)}/{len(cells)} cells done, {len(state.failed)} failed; rows in {out_dir / 'rows.jsonl'}")
    for cid, e in state.failed.items():
        err.print(f"[red]failed[/red] {cid}: {e}")
    if state.failed:
        raise typer.Exit(1)


@app.command()
def tune(
    config: str = typer.Option(..., "--config", help="tune YAML: a sweep file plus tune: and final: sections (see docs/sweeps.md)"),
    out: Optional[str] = typer.Option(None, help="output folder (default: results/tune/<name>)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP + " (default: the file's launcher:, else inline)"),
    jobs: Optional[int] = typer.Option(None, help="--launcher local: worker processes at once; slurm: array parallelism"),
    retry_failed: bool = typer.Option(False, help="rerun (resubmit) trial and final cells recorded as failed"),
    tuning_only: bool = typer.Option(False, help="stop once the choice is made (tuning.md, final/chosen.json), before "
                                     "the final phase; the same command without it runs the final phase"),
) -> None:
    """Equal tuning budget per method (selection on validation), then the chosen configs over seeds on test."""
    from .tune import tune as work

    out_dir, chosen, recs = work(config, out=out, device=device, launcher=launcher, jobs=jobs, retry_failed=retry_failed,
                                 tuning_only=tuning_only)
    console.print((out_dir / "tuning.md").read_text(), markup=False, highlight=False)
    for m, c in chosen.items():
        cfg = {**{f"train.{k}": v for k, v in c["tuned_train"].items()}, **{f"method.{k}": v for k, v in c["method_cfg"].items()}}
        console.print(f"{m}: trial {c['trial']} chosen ({', '.join(f'{k}={v}' for k, v in cfg.items()) or 'defaults'}), "
                      f"validation {c.get('metric', 'accuracy')} {100 * c['val_accuracy']:.1f}%")
    if tuning_only:
        console.print(f"final phase not run (--tuning-only): the same command without --tuning-only runs it into {out_dir / 'final'}")
    else:
        console.print(f"final rows in {out_dir / 'final' / 'rows.jsonl'}; tables: lfpo-bench table {out_dir / 'final'} --paired-vs none")


@app.command()
def gradcheck(
    task: str = typer.Option("sudoku4", help="task whose train split supplies the fixed prompt set"),
    methods: str = typer.Option(",".join(("lfpo", "diffu_grpo", "wd1", "spg", "coupled_grpo", "espo", "trace_rl", "d2", "map")),
                                help="comma-separated methods"),
    model: str = typer.Option("tiny", help="tiny (the embedded start) or a checkpoint folder (e.g. a run's checkpoint/)"),
    prompts: int = typer.Option(8, help="prompts in the fixed set"),
    group_size: int = typer.Option(8, help="G completions per prompt in a method's batch"),
    batches: int = typer.Option(64, help="independent batches per method"),
    ref_samples: int = typer.Option(1024, help="trajectories per prompt for the reference gradient"),
    steps: Optional[int] = typer.Option(None, help="rollout steps (default: the task's RL preset)"),
    target: float = typer.Option(0.9, help="cosine the batches-to column asks for"),
    seed: int = typer.Option(0, help="prompt choice, rollouts and masks"),
    out: Optional[str] = typer.Option(None, help="write the result (JSON) here"),
    ref_cache: Optional[str] = typer.Option(None, help="keep the reference gradient g* in this file (reused when the "
                                            "setting matches, so methods added later cost minutes, not the g* again)"),
    add: bool = typer.Option(False, help="add the measured methods' rows to the existing --out (same setting) "
                                         "instead of refusing to overwrite it"),
) -> None:
    """How close is each method's gradient to the exact policy gradient (random-remasking rollouts)?"""
    import json
    from pathlib import Path

    from .gradcheck import GradcheckConfig, run_gradcheck
    from .registry import METHODS

    names = tuple(m.strip() for m in methods.split(",") if m.strip())
    for m in names:
        METHODS.get(m)  # unknown names: "did you mean" before any work
    for flag, v in (("--prompts", prompts), ("--batches", batches)):
        if v < 1:
            raise UserError(f"{flag} {v}: must be >= 1")
    if group_size < 2 or ref_samples < 4:
        raise UserError("--group-size must be >= 2 and --ref-samples >= 4 (leave-one-out baselines)")
    if steps is not None and steps < 1:
        raise UserError(f"--steps {steps}: must be >= 1 (or omit it for the task's rollout steps)")
    if not 0 < target <= 1:
        raise UserError(f"--target {target}: a cosine in (0, 1], e.g. 0.9")
    previous = None
    if add and not out:
        raise UserError("--add adds rows to the result in --out; give --out")
    if out:
        from .outputs import check_file

        check_file(out, "gradcheck", "--out", "gradcheck.json")
        if add and Path(out).exists():
            previous = json.loads(Path(out).read_text())
    res = run_gradcheck(GradcheckConfig(task=task, model=model, methods=names, prompts=prompts, group_size=group_size,
                                        batches=batches, ref_samples=ref_samples, steps=steps, target_cos=target, seed=seed),
                        ref_cache=ref_cache)
    if previous is not None:
        from .gradcheck import merge_results

        res = merge_results(previous, res)
    t = Table(title=f"gradient fidelity on {task} ({res['model']}): random-remasking rollouts, {res['rollout_steps']} steps; "
                    f"reference split-half cosine {res['split_half_cos']:.3f}")
    for col in ("method", "cos(mean g, g*)", "mean cos(g, g*)", "rel. variance", f"batches to cos {target}"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(r["method"], f"{r['cos_mean']:.3f}", f"{r['cos_batch']:.3f}", f"{r['rel_var']:.2f}", str(r["batches_to"]))
    console.print(t)
    if out:
        from .outputs import write_atomic

        write_atomic(out, json.dumps(res, indent=1, default=str) + "\n")
        console.print(f"written to {out}")


@app.command()
def table(
    paths: list[str] = typer.Argument(..., help="rows.jsonl files or sweep/run folders"),
    metric: str = typer.Option("accuracy", help="accuracy (the task score) or an extra metric such as solved"),
    stage: str = typer.Option("after", help="after: each run's validation-selected checkpoint | last: its last update"),
    fmt: str = typer.Option("markdown", "--format", help="markdown | csv | latex"),
    paired_vs: Optional[str] = typer.Option(None, help="mark differences significant against this method (†)"),
    target: Optional[str] = typer.Option(None, help="equal-accuracy view: accuracy to reach, e.g. 0.6, or auto (per task, the "
                                         "highest accuracy every method reaches), or match (with --baseline: the "
                                         "fewest steps at which the baseline matches each method's best, tested)"),
    baseline: Optional[str] = typer.Option(None, help="equal-accuracy view: method the NFE ratio is taken against"),
    deltas_vs: Optional[str] = typer.Option(None, help="ablation view: each method label's difference to this one, e.g. lfpo"),
    check: bool = typer.Option(False, help="fail if rows mix code versions or datasets"),
    allow_mixed: bool = typer.Option(False, help="with --check: report mixed rows anyway"),
    out: Optional[str] = typer.Option(None, help="also write the tables to this file"),
) -> None:
    """Accuracy table with 95% bootstrap CIs, latency/NFE table, and the equal-accuracy NFE view."""
    from . import report

    if fmt not in ("markdown", "csv", "latex"):
        raise UserError(f"--format must be markdown, csv or latex, got {fmt!r}")
    if stage not in ("after", "last"):
        raise UserError(f"--stage must be after (the validation-selected checkpoint) or last (the last update), got {stage!r}")
    if target == "match" and baseline is None:
        raise UserError("--target match needs --baseline METHOD: the method whose steps to each other method's best "
                        "accuracy are counted (e.g. --baseline lfpo)")
    if target is not None and target not in ("auto", "match"):
        try:
            target = float(target)
        except ValueError:
            raise UserError(f"--target {target!r}: a fraction in (0, 1] (e.g. 0.85 for 85%), auto or match") from None
        if not 0 < target <= 1:
            raise UserError(f"--target {target}: the accuracy to reach, as a fraction in (0, 1] (e.g. 0.85 for 85%)")
    if out:
        from pathlib import Path

        from .outputs import check_file

        inputs = {Path(p).resolve() for p in paths} | {(Path(p) / "rows.jsonl").resolve() for p in paths}
        if Path(out).resolve() in inputs or Path(out).suffix == ".jsonl":
            raise UserError(f"--out {out}: would overwrite result rows; write the table to a new file such as table.md")
        check_file(out, "table", "--out", "table.md")
    df = report.load_rows(paths, metric=metric, stage=stage)
    mixed = report.check_provenance(df, allow_mixed=allow_mixed or not check)
    parts = [f"{metric} (%), mean ± 95% CI half-width over problems and seeds"
             + ("; last update of every run (--stage last)" if stage == "last" else "") + ("; † p < 0.05 vs " + paired_vs + ", " + report.SEED_AWARE if paired_vs else ""),
             report.render(report.comparison_table(df, paired_vs=paired_vs, fmt=fmt), fmt)]
    note = report.tuned_note(df)  # what each task chose, for methods shown as method[tuned]
    if note:
        parts.append(note)
    cost = report.cost_table(df)
    if len(cost):
        parts += ["", "training cost per run (config.budget, whole run; a count that differs between seeds reads min-max); "
                  "row's update: the update each seed's row was evaluated at, of its last", report.render(cost, fmt)]
    parts += ["",
             "latency (timing pass: ms per request = median of all batch-1 requests, IQR of single calls; ms per sample = median "
             "over rounds of one batch call; ≈: that median's 95% interval is wider than 11% of it, so it cannot be told from "
             "a figure 1.25x away; 1 pass: no timing pass, accuracy-pass p50)", report.render(report.latency_table(df), fmt)]
    if deltas_vs is not None:
        parts += ["", f"difference to {deltas_vs} in points, [95% CI]; † p < 0.05; both {report.SEED_AWARE}",
                  report.render(report.delta_table(df, deltas_vs), fmt)]
    if target == "match":
        parts += ["", f"equal accuracy, tested: each method's best fixed-step accuracy; the fewest steps at which {baseline} "
                  f"reaches it; NFE and ms-per-request ratios ({baseline} / the method); {baseline}@those steps minus the "
                  f"method@its best, points [95% CI], {report.SEED_AWARE}",
                  report.render(report.match_table(df, baseline).set_index(["task", "method"]).round(3), fmt)]
    elif target is not None:
        goal = report.common_targets(df) if target == "auto" else target
        eq = report.equal_accuracy(df, goal, baseline)
        said = (", ".join(f"{t} {100 * v:.1f}%" for t, v in goal.items()) + " (the highest every method reaches)"
                if isinstance(goal, dict) else f"{100 * goal:.0f}%")
        parts += ["", f"equal accuracy: fewest mean NFE, fewest ms per request and fewest ms per sample reaching {said}"
                  + (f" (ratios vs {baseline})" if baseline else ""),
                  report.render(eq.set_index(["task", "method"]).round(3), fmt)]
    parts += ["", report.footer(df, list(paths))] + [f"WARNING: {m}" for m in mixed]
    text = "\n".join(parts)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if out:
        from .outputs import write_atomic

        write_atomic(out, text + "\n")


@app.command()
def plot(
    paths: list[str] = typer.Argument(..., help="rows.jsonl files or sweep/run folders"),
    out: str = typer.Option("results/plots", help="output folder (PNG and SVG)"),
    x: str = typer.Option("nfe", help="x axis of the trade-off plot: nfe | ms"),
    runs: Optional[str] = typer.Option(None, help="a run folder, or a folder of run folders (e.g. SWEEP/runs): training curves"),
) -> None:
    """Accuracy vs steps and accuracy vs NFE/latency (Pareto fronts); training curves from run logs."""
    from pathlib import Path

    from . import plot as P
    from . import report
    from .outputs import claim_folder

    df = report.load_rows(paths)
    claim_folder(out, "plots", "--out")
    files = P.accuracy_plots(df, out, list(paths), x="ms" if x == "ms" else "nfe")
    if runs:
        root = Path(runs)
        dirs = [root] if (root / "log.jsonl").exists() else sorted(d for d in root.iterdir() if (d / "log.jsonl").exists())
        if not dirs:
            raise UserError(f"no run logs (log.jsonl) under {root}")
        files += P.training_curves(dirs, out)
    for f in files:
        console.print(f"wrote {f}")


@app.command("lm-eval")
def lm_eval_cmd(
    model: str = typer.Option("tiny", help="tiny | checkpoint folder | hub id"),
    tasks: str = typer.Option(..., help="comma-separated lm-eval task names"),
    include_path: Optional[str] = typer.Option(None, help="folder of extra task YAMLs (e.g. local-data tasks)"),
    limit: Optional[int] = typer.Option(None, help="documents per task"),
    num_fewshot: Optional[int] = typer.Option(None),
    gen_length: int = typer.Option(256), steps: int = typer.Option(128), block_length: int = typer.Option(32),
    mc_num: int = typer.Option(128, help="Monte-Carlo draws of the loglikelihood estimate"),
    device: str = typer.Option("auto"),
    out: Optional[str] = typer.Option(None, help="write lm-eval's results JSON here"),
) -> None:
    """Run lm-evaluation-harness tasks with the harness sampler (model registered as `lfpo-dllm`)."""
    import json as _json

    from .config import resolve_device
    from .lm_eval_adapter import run_lm_eval

    if out:
        from .outputs import check_file

        check_file(out, "lm-eval", "--out", "lm_eval.json")

    res = run_lm_eval(model, [t for t in tasks.split(",") if t], include_path=include_path, limit=limit,
                      device=resolve_device(device), num_fewshot=num_fewshot,
                      model_args={"gen_length": gen_length, "steps": steps, "block_length": block_length, "mc_num": mc_num})
    if res is None:  # not rank 0
        return
    console.print_json(_json.dumps(res["results"], default=str))
    if out:
        from .outputs import write_atomic

        write_atomic(out, _json.dumps(res["results"], indent=2, default=str))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()  # standalone: click reports usage errors itself and exits 2
    except UserError as e:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(e))}")  # messages name labels like lfpo[k=2]: not markup
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (typer turns one inside into exit status 130)
        _interrupted()
    except SystemExit as e:
        if e.code == 130:  # Ctrl-C inside a command
            _interrupted()
        raise


def _interrupted() -> None:
    from .outputs import interrupt_message

    print(interrupt_message(), file=sys.stderr, flush=True)  # one line: what was kept, and how to resume
    sys.exit(130)


if __name__ == "__main__":
    main()
