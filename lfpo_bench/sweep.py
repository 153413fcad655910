"""``lfpo-bench sweep``: expand a sweep file into cells, run each (train + evaluate), resumably.

A sweep file (YAML) names everything by registry key; every list expands:

    name: my-sweep
    methods: [none, lfpo, diffu_grpo]        # or "path/to/file.py:Class"
    tasks: [sudoku4]
    models: [tiny]                           # optional: default = each task's default model
    seeds: [0, 1, 2]
    train: {updates: 60, lr: [1e-4, 3e-4]}   # TrainConfig fields (lists expand)
    method:                                  # per-method config fields (lists expand)
      lfpo: {beta: [0.5, 1.0], k: 4}         # or a list of variants (one-at-a-time ablations):
      # lfpo: [{}, {ema: 0.0}, {k: 2}, {weighting: uniform}]
    train_by_method:                         # per-method TrainConfig fields, over `train` (lists expand)
      wd1: {lr: 1e-5}
    eval:                                    # decoding settings evaluated in every cell
      gen_length: 16                         # one value or a list
      block_length: 16
      steps: [1, 2, 4, 8, 16]                # or steps_ratio: 0.5 (steps = L/2 for each gen_length)
      thresholds: [0.9]
      temperature: 0.0
      limit: null
    timing: {reps: 9, prompts: 8, batch_size: 32}   # the timing pass (``timing.py``); reps: 0 turns it off

A cell is (method, method config, task, model, train config, seed); its identity is the hash of that
resolved config plus the eval settings. Per cell: train (unless the method does not train), then
evaluate every decoding setting with the loaded model. Rows are appended to ``<out>/rows.jsonl`` and
the cell's status to ``<out>/cells.jsonl``; a cell counts as done only once its status line is
written. On start, rows of cells that are not done (a kill between the two appends) are dropped and a
torn last line is repaired, so ``kill -9`` then the same command again finishes the sweep with no lost,
duplicated or corrupt rows. Training cells resume from their last checkpoint. A failing cell is
recorded with its error and the sweep goes on; ``--retry-failed`` reruns failed cells.

Latency is not taken per cell: once every cell is done, one timing pass (``timing.py``) loads each cell's
model (a copy per cell, also where cells name the same weights: identical work reads identical) and times all (cell, setting) items in one interleaved schedule, so cells are compared under the
same machine conditions; records go to ``<out>/timing.jsonl`` (joined to rows by cell and config hash).
``timing.interleave: cell`` times each cell on its own instead (``auto`` does so when the models together
would not fit in 4 GiB, or 30% of the GPU). A new cell re-times the whole schedule; an interrupted timing
pass restarts on the next run.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import load_file
from .decoding import DecodingSpec

if TYPE_CHECKING:
    from .evaluate import EvalOptions
from .provenance import config_hash
from .results import append_rows, read_rows, repair, rows_text
from .timing import TimingConfig
from .types import UserError

log = logging.getLogger(__name__)
TOP_KEYS = {"name", "methods", "tasks", "models", "seeds", "train", "method", "eval", "data", "timing", "train_by_method", "launcher"}
STAGE_KEYS = {"limit", "batch_size", "split"}  # how the evaluation stage runs (EvalOptions)
EVAL_KEYS = set(DecodingSpec.names()) | STAGE_KEYS  # the decoding settings are DecodingSpec's fields
PRESETS = Path(__file__).parent / "presets"


def _list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _grid(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over list-valued entries."""
    keys = sorted(d)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(_list(d[k]) for k in keys))]


@dataclass
class Cell:
    method: str
    task: str
    model: str | None
    seed: int
    method_cfg: dict = field(default_factory=dict)
    train_cfg: dict = field(default_factory=dict)
    eval_cfg: dict = field(default_factory=dict)
    data: str | None = None

    def key(self) -> dict:
        return {"method": self.method, "task": self.task, "model": self.model, "seed": self.seed, "method_cfg": self.method_cfg,
                "train_cfg": self.train_cfg, "eval": self.eval_cfg, "data": self.data}

    @property
    def id(self) -> str:
        return config_hash(self.key())

    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.method_cfg.items()))
        return f"{self.method}{'[' + extra + ']' if extra else ''}/{self.task}/s{self.seed}"


def method_variants(section, method: str, where: str) -> list[dict]:
    """A method's configs: the grid of a mapping, or the concatenated grids of a list of mappings (variants)."""
    if section is None or section == {}:
        return [{}]
    if isinstance(section, dict):
        return _grid(section)
    if isinstance(section, list) and all(isinstance(v, dict) for v in section):
        out = [g for v in section for g in _grid(v)]
        return out
    raise UserError(f"{where}: method.{method} must be a mapping of fields to values or a list of such mappings, got {section!r}")


def expand(spec: dict, where: str = "sweep") -> list[Cell]:
    """Cells of a sweep spec, validated: unknown keys, methods, tasks and config fields are errors."""
    from .config import build, flatten
    from .registry import METHODS, TASKS
    from .trainer import TrainConfig

    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for k in ("methods", "tasks"):
        if not spec.get(k):
            raise UserError(f"{where}: '{k}' must list at least one entry")
    ev = spec.get("eval") or {}
    if not isinstance(ev, dict):
        raise UserError(f"{where}: 'eval' must be a mapping such as {{steps: [1, 2, 4]}}, got {ev!r}")
    bad = set(ev) - EVAL_KEYS
    if bad:
        raise UserError(f"{where}: unknown eval key(s) {sorted(bad)}; allowed: {sorted(EVAL_KEYS)}")
    eval_parts(ev, f"{where}: eval")
    per_method = spec.get("method") or {}
    by_method = spec.get("train_by_method") or {}
    for section, d in (("method", per_method), ("train_by_method", by_method)):
        if not isinstance(d, dict):
            raise UserError(f"{where}: '{section}' must map method names to settings, got {d!r}")
        for m in d:
            if m not in _list(spec["methods"]):
                raise UserError(f"{where}: '{section}' has settings for {m!r}, which is not in methods")
    timing_config(spec, where)

    train = spec.get("train") or {}
    if not isinstance(train, dict):
        raise UserError(f"{where}: 'train' must be a mapping of TrainConfig fields to values, got {train!r}")
    train = flatten(TrainConfig, train, "train.")  # rollout: {steps: [4, 8]} -> rollout.steps: [4, 8]
    for m, over in list(by_method.items()):
        if not isinstance(over, dict):
            raise UserError(f"{where}: train_by_method.{m} must be a mapping of TrainConfig fields to values, got {over!r}")
        by_method = {**by_method, m: flatten(TrainConfig, over, f"train_by_method.{m}.")}
        over = by_method[m]
        for k in set(over) & set(train):
            if _list(over[k]) != _list(train[k]):
                raise UserError(f"{where}: train.{k} is given twice with different values: {train[k]!r} by train: and "
                                f"{over[k]!r} by train_by_method.{m}; keep one of them (put it in train_by_method for "
                                "every method that needs its own value)")
    seeds = _list(spec.get("seeds") or [0])
    bad_seeds = [x for x in seeds if isinstance(x, bool) or not isinstance(x, int) or x < 0]
    if bad_seeds:
        raise UserError(f"{where}: seeds must be non-negative integers, got {bad_seeds}")

    def train_grid_of(method: str) -> list[dict]:
        grid = _grid({**train, **(by_method.get(method) or {})})
        for t in grid:
            build(TrainConfig, {**t, "seed": 0}, "train.")  # validates keys and types
        return grid

    for m in _list(spec["methods"]):
        train_grid_of(m)
    cells = []
    for method, task, model, seed in itertools.product(_list(spec["methods"]), _list(spec["tasks"]),
                                                      _list(spec.get("models") or [None]), _list(spec.get("seeds") or [0])):
        cls = METHODS.get(method)
        TASKS.get(task)
        for mcfg in method_variants(per_method.get(method), method, where):
            build(cls.Config, mcfg, f"method.{method}.")
            for tcfg in train_grid_of(method):
                cells.append(Cell(method, task, model, int(seed), mcfg, tcfg, dict(ev), spec.get("data")))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise UserError(f"{where}: the sweep expands to duplicate cells; remove repeated values")
    return cells


@dataclass
class SweepState:
    done: set[str]
    failed: dict[str, str]
    submitted: dict[str, dict] = field(default_factory=dict)  # cell -> its job (job_id, folder): queued or running
    last: dict[str, dict] = field(default_factory=dict)  # cell -> its latest cells.jsonl record


def read_state(out: Path) -> SweepState:
    st = SweepState(set(), {})
    for rec in read_rows(out / "cells.jsonl"):
        cid = rec["cell"]
        st.last[cid] = rec
        if rec["status"] == "done":
            st.done.add(cid)
            st.failed.pop(cid, None)
            st.submitted.pop(cid, None)
        elif rec["status"] == "failed":
            st.failed[cid] = rec.get("error", "")
            st.submitted.pop(cid, None)
        elif rec["status"] == "submitted":
            st.submitted[cid] = rec
            st.failed.pop(cid, None)
    return st


def reconcile(out: Path, done: set[str]) -> int:
    """Drop rows of cells that never finished (killed between the rows and the status append)."""
    path = out / "rows.jsonl"
    repair(path)
    rows = read_rows(path)
    keep = [r for r in rows if r.get("cell") in done]
    if len(keep) == len(rows):
        return 0
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(rows_text(keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(rows) - len(keep)


def check_data_unchanged(out: Path, cells: list[Cell], done: set[str]) -> None:
    """Refuse to resume a folder whose done cells were evaluated on other data than their synthetic task now
    generates (a generator changed since): a done cell is never rerun, so its rows would stand, under the same
    cell id, beside rows made on the new data. Synthetic tasks only: their data is generated here, without
    I/O; a real dataset's hash is checked where its rows are combined (``report.check_provenance``)."""
    from .config import make_task
    from .registry import TASKS

    data_of = {c.id: c.data for c in cells}
    known = set(TASKS.names())
    made: dict[tuple[str, str, str | None], set[str]] = {}
    for r in read_rows(out / "rows.jsonl"):
        if r.get("cell") in done and r.get("cell") in data_of and r.get("dataset_sha256") and r.get("task") in known:
            made.setdefault((r["task"], r.get("split") or "", data_of[r["cell"]]), set()).add(r["dataset_sha256"])
    for (task, split, data), shas in sorted(made.items(), key=str):
        cls = TASKS.get(task)
        if not getattr(cls, "synthetic", False) or split not in cls.splits:
            continue
        now = make_task(task, data).load_with_hash(split)[1]
        if shas - {now}:
            raise UserError(f"{out}: done cells of {task} were evaluated on a different {task}:{split} than this code "
                            f"generates (dataset sha256 {sorted(shas - {now})[0][:12]}, now {now[:12]}): the task's "
                            "generator changed since, and those rows would stand beside rows made on the new data. "
                            "Run the sweep into a new folder (or move this one away)")


def timing_config(spec: dict, where: str = "sweep") -> TimingConfig:
    from .config import build

    t = spec.get("timing") or {}
    if not isinstance(t, dict):
        raise UserError(f"{where}: 'timing' must be a mapping such as {{reps: 9, prompts: 8}}, got {t!r}")
    return build(TimingConfig, t, "timing.").check()


def eval_parts(ev: dict, where: str = "eval") -> tuple[DecodingSpec, EvalOptions]:
    """A sweep file's ``eval:`` section as the decoding spec and the stage options (validated, typed)."""
    from .config import build
    from .evaluate import EvalOptions

    spec = DecodingSpec.from_mapping({k: v for k, v in ev.items() if k not in STAGE_KEYS}, where)
    opts = build(EvalOptions, {"batch_size": 128, **{k: v for k, v in ev.items() if k in STAGE_KEYS}}, f"{where}.").check()
    return spec, opts


def run_cell(cell: Cell, out: Path, device: str, show_progress: bool, report_to: str = "none") -> list[dict]:
    from .train_job import RunArgs, run

    decoding, opts = eval_parts(cell.eval_cfg)
    res = run(RunArgs(
        method=cell.method, task=cell.task, model=cell.model, method_values=dict(cell.method_cfg),
        train_values=dict(cell.train_cfg), source=f"sweep cell {cell.label()}", seed=cell.seed, out_dir=str(out / "runs"),
        run_id=cell.id, device=device, data=cell.data, decoding=decoding, opts=opts, resume=True,
        show_progress=show_progress, eval_before=False, report_to=report_to,
        timing=TimingConfig(reps=0),  # timed together with every other cell once the sweep is done
    ))
    rows = []
    for r in res.after + res.last:  # "last": the cell's last update, next to the selected checkpoint ("after")
        d = r.to_dict()
        d.update(cell=cell.id, cell_label=cell.label(), method_cfg=cell.method_cfg, train_cfg=cell.train_cfg)
        rows.append(d)
    return rows


def sweep(spec_path: str, out: str | None = None, device: str = "auto", retry_failed: bool = False,
          show_progress: bool = True, only: int | None = None, report_to: str = "none", launcher: str | None = None,
          jobs: int | None = None) -> tuple[Path, list[Cell], SweepState]:
    """Run every cell of ``spec_path`` not yet done. ``only``: stop after that many new cells (testing, inline
    only). ``launcher``/``jobs``: where cells run (``launch.py``; over the file's ``launcher:`` section)."""
    from .launch import launcher_config
    from .trackers import check_report_to

    check_report_to(report_to)
    if not Path(spec_path).exists() and (PRESETS / f"{spec_path}.yaml").exists():
        spec_path = str(PRESETS / f"{spec_path}.yaml")  # a shipped preset by name (d1, llada)
    spec = load_file(spec_path)
    cells = expand(spec, spec_path)
    lc = launcher_config(spec, launcher, jobs, spec_path)
    if lc.kind != "inline" and only is not None:
        raise UserError("only= stops an inline sweep after N cells; it has no meaning for a launcher")
    name = str(spec.get("name") or Path(spec_path).stem)
    out_dir = Path(out or Path("results") / "sweeps" / name)
    from .outputs import Lock, claim_folder, on_interrupt, rerun_command

    claim_folder(out_dir, "sweep", "--out", name=name)  # new, or this sweep's own folder: never another's or a user's
    with Lock(out_dir, "sweep"):
        on_interrupt(f"finished cells are kept in {out_dir} (cells.jsonl); resume with: {rerun_command()}")
        return _sweep_in(spec, spec_path, cells, out_dir, device, retry_failed, show_progress, only, report_to, lc)


def _sweep_in(spec, spec_path, cells, out_dir: Path, device, retry_failed, show_progress, only, report_to, lc):
    from .config import resolve_device
    from .progress import progress_bar

    (out_dir / "sweep.yaml").write_text(Path(spec_path).read_text())
    device = resolve_device(device)
    state = read_state(out_dir)
    dropped = reconcile(out_dir, state.done)
    if dropped:
        log.warning("dropped %d rows of unfinished cells; they will be rerun", dropped)
    check_data_unchanged(out_dir, cells, state.done)
    todo = [c for c in cells if c.id not in state.done and (retry_failed or c.id not in state.failed)]
    skipped_failed = [c for c in cells if c.id in state.failed and not retry_failed]
    if skipped_failed:
        log.warning("%d failed cell(s) skipped; pass --retry-failed to rerun them", len(skipped_failed))
    ran = 0
    if lc.kind == "inline" and state.submitted:  # jobs of an earlier launcher run: wait for them, never run a cell twice
        from .launch import LauncherConfig, supervise

        kind = next(iter(state.submitted.values())).get("launcher", "local")
        log.warning("%d cell(s) were submitted by an earlier --launcher %s run; waiting for them", len(state.submitted), kind)
        supervise(cells, [], out_dir, LauncherConfig(kind=kind), state, device, report_to, show_progress)
        todo = [c for c in todo if c.id not in state.done and c.id not in state.failed]
    if lc.kind != "inline":
        return _launched(spec, spec_path, cells, todo, out_dir, device, show_progress, report_to, lc, state)
    with progress_bar(f"sweep {out_dir.name}", total=len(cells), enabled=show_progress) as bar:
        bar.advance(len(cells) - len(todo))
        for cell in todo:
            if only is not None and ran >= only:
                break
            t0 = time.time()
            try:
                rows = run_cell(cell, out_dir, device, show_progress=False, report_to=report_to)
                append_rows(out_dir / "rows.jsonl", rows)
                append_rows(out_dir / "cells.jsonl", [{"cell": cell.id, "label": cell.label(), "status": "done",
                                                       "seconds": round(time.time() - t0, 1), "rows": len(rows)}])
                state.done.add(cell.id)
                state.failed.pop(cell.id, None)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - record and go on
                err = f"{type(e).__name__}: {e}"
                log.error("cell %s failed: %s", cell.label(), err)
                append_rows(out_dir / "cells.jsonl", [{"cell": cell.id, "label": cell.label(), "status": "failed", "error": err,
                                                       "traceback": traceback.format_exc()[-4000:]}])
                state.failed[cell.id] = err
            ran += 1
            bar.advance(1, cell=cell.label())
    if only is None or ran < only:
        time_cells(out_dir, cells, state, timing_config(spec, spec_path), device, show_progress)
    return out_dir, cells, state


def _launched(spec, spec_path, cells, todo, out_dir: Path, device, show_progress, report_to, lc, state):
    """Cells through a launcher (``launch.supervise``), then the timing pass: in this process after local
    workers, as ONE job after SLURM cells (one node times every cell in one schedule, so latencies compare)."""
    from .launch import make_executor, supervise, timing_job
    from .progress import progress_bar

    with progress_bar(f"sweep {out_dir.name} ({lc.kind})", total=len(cells), enabled=show_progress) as bar:
        bar.advance(len(cells) - len(todo))
        supervise(cells, todo, out_dir, lc, state, device, report_to, show_progress, bar=bar)
    tcfg = timing_config(spec, spec_path)
    if tcfg.reps == 0 or not state.done:
        return out_dir, cells, state
    if lc.kind == "slurm":
        ex = make_executor(lc, out_dir / "jobs" / f"timing-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", f"lfpo-{out_dir.name}-timing")
        job = ex.submit(timing_job, str(out_dir / "sweep.yaml"), str(out_dir), "auto")
        log.info("timing pass submitted as job %s", job.job_id)
        job.result()
    else:
        time_cells(out_dir, cells, state, tcfg, device, show_progress)
    return out_dir, cells, state


def _budget_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(0.3 * torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return 4 << 30


def time_cells(out: Path, cells: list[Cell], state: SweepState, tcfg: TimingConfig, device: str, show_progress: bool) -> int:
    """The sweep's timing pass (see the module docstring); returns the number of rows timed now."""
    from .config import make_task
    from .evaluate import Decoding
    from .models.loader import load_model
    from .timing import Item, measure

    if tcfg.reps == 0:
        return 0
    by_id = {c.id: c for c in cells}
    # the selected checkpoints' rows; a "last" row decodes the same settings with other weights (same cost)
    rows = [r for r in read_rows(out / "rows.jsonl") if r.get("cell") in state.done and r.get("cell") in by_id
            and r.get("stage") != "last"]
    path = out / "timing.jsonl"
    repair(path)
    have = {(t["cell"], t["config_hash"]) for t in read_rows(path)}
    cell_ids = list(dict.fromkeys(r["cell"] for r in rows))
    models: dict[str, object] = {}  # cell id -> its model
    tasks: dict[tuple, object] = {}

    def items_of(cid: str) -> list[Item]:
        cell = by_id[cid]
        tkey = (cell.task, cell.data)
        if tkey not in tasks:
            tasks[tkey] = make_task(cell.task, cell.data)
        task = tasks[tkey]
        out_items = []
        for r in (r for r in rows if r["cell"] == cid):
            spec = spec_of(r)
            # every cell gets its own copy, even of weights another cell names too (the start's seeds): sharing one
            # copy, the start's three seeds read 1.17, 1.19 and 1.41 ms at 1 step (countdown3-mini, 2026-12-07), a
            # 1.27x spread for identical work; with a copy each, 1.13x (bench/latency_groups.py)
            if cid not in models:
                try:
                    models[cid] = load_model(spec, task=task, device=device, quiet=True)
                except (OSError, UserError) as e:
                    raise UserError(f"timing pass: cannot load the model of cell {cell.label()} ({spec}): {e}; restore "
                                    "its run folder, or set timing: {reps: 0} in the sweep file") from None
            problems = task.load(r["split"])[: r["config"].get("limit")]
            out_items.append(Item((cid, r["config_hash"]), models[cid], task, Decoding.from_record(r["config"]["decoding"]),
                                  problems, int(r["seed"])))
        return out_items

    def spec_of(r: dict) -> str:
        ckpt = out / "runs" / r["cell"] / "checkpoint"
        return str(ckpt) if ckpt.exists() else r["checkpoint"]

    def batch_of(cid: str) -> int:
        return int(by_id[cid].eval_cfg.get("batch_size", 128))

    def write(items: list[Item], recs: list[dict]) -> None:
        append_rows(path, [{"cell": it.key[0], "config_hash": it.key[1], "timing": rec} for it, rec in zip(items, recs)])

    mode = tcfg.interleave
    todo = [c for c in cell_ids if any((c, r["config_hash"]) not in have for r in rows if r["cell"] == c)]
    if not todo:
        return 0
    if mode in ("auto", "sweep"):
        first = items_of(cell_ids[0])
        size = sum(p.numel() * p.element_size() for p in first[0].lm.module.parameters()) if first else 0
        n_models = len(cell_ids)  # one copy per cell (above)
        if mode == "auto":
            mode = "sweep" if size * n_models <= _budget_bytes(device) else "cell"
            if mode == "cell":
                log.info("timing: %d models of %.1f GiB do not fit together; timing each cell on its own", n_models, size / 2**30)
    if mode == "sweep":  # everything in one schedule, including cells timed before: they stay comparable
        items = [it for c in cell_ids for it in items_of(c)]
        batch = max(batch_of(c) for c in cell_ids)
        write(items, measure(items, tcfg, batch_size=batch, show_progress=show_progress, group="sweep"))
        return len(items)
    n = 0
    for c in todo:
        items = items_of(c)
        write(items, measure(items, tcfg, batch_size=batch_of(c), show_progress=show_progress, group=f"cell {c}"))
        models.clear()
        n += len(items)
    return n
