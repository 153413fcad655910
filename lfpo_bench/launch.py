"""Where a sweep's cells run: ``inline`` (one after another in this process, the default), ``local`` (N worker
processes on this machine) or ``slurm`` (one SLURM job per cell, a job array per submission). The two last go
through submitit (its ``LocalExecutor`` and ``SlurmExecutor``); nothing here schedules work itself.

The supervisor (the ``lfpo-bench sweep``/``tune`` process) submits cells, records each job id in
``cells.jsonl`` (status ``submitted``), and polls. A worker runs the cell exactly as the inline loop does
(train, evaluate) and writes the cell's rows to ``runs/<cell>/cell_rows.jsonl`` in one atomic step, or its
error to ``runs/<cell>/cell_error.json``; workers never touch the sweep's ``rows.jsonl``. The supervisor merges
a finished cell's rows into ``rows.jsonl`` and then writes its ``done`` line; a crash between the two leaves
rows of a cell that is not done, which the next start drops (``sweep.reconcile``) and merges again from the
cell's file: every row lands exactly once.

The supervisor may die at any time. Run the same command again: a cell recorded as ``submitted`` is
reattached (its job is still queued or running: wait for it; it ended: take its result), never submitted
again. A job that ended without a result (cancelled, timed out, preempted past submitit's requeues, killed,
out of memory) is recorded as ``failed`` with its state and the tail of its log; ``--retry-failed``
resubmits it, and its training resumes from the run's last checkpoint. Preemption and time limits are also
handled inside a job: a cell is a submitit ``Checkpointable``, so on SLURM's warning signal submitit requeues
it and the requeued job resumes from the last checkpoint.

A job is alive while its scheduler says so (SLURM: ``sacct``/``squeue`` through submitit, so the cluster
needs accounting) or, for local workers, while its controller process lives or the cell's run folder is
locked (``outputs.Lock``: a worker whose controller was killed still holds it).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .outputs import Lock
from .types import UserError

log = logging.getLogger(__name__)
KINDS = ("inline", "local", "slurm")
SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
               "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "UNKNOWN", "READY"}
CELL_ROWS = "cell_rows.jsonl"
CELL_ERROR = "cell_error.json"
ACCELERATE_CONFIGS = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


@dataclass(frozen=True)
class LauncherConfig:
    """The ``launcher:`` section of a sweep or tune file (``--launcher``/``--jobs`` override ``kind``/``jobs``)."""

    kind: str = "inline"  # inline | local | slurm
    jobs: int = 1  # local: worker processes at once; slurm: array parallelism (0: no limit)
    threads: int | None = None  # local: torch threads per worker (None: cores // jobs, at least 1)
    poll_s: float | None = None  # seconds between checks (None: 0.5 local, 10 slurm)
    time_min: int = 24 * 60  # a job's time limit in minutes (SLURM --time; local workers are stopped after it)
    partition: str | None = None  # SLURM --partition
    account: str | None = None  # SLURM --account
    qos: str | None = None  # SLURM --qos
    constraint: str | None = None  # SLURM --constraint
    gpus_per_cell: int = 0  # GPUs per cell (slurm: --gpus-per-node; local: one each from CUDA_VISIBLE_DEVICES when > 0)
    cpus_per_task: int | None = None  # SLURM --cpus-per-task
    mem_gb: float | None = None  # SLURM --mem in GB
    sbatch: tuple[str, ...] = ()  # extra "#SBATCH" options, e.g. ["--exclusive", "--nice=10"]
    setup: tuple[str, ...] = ()  # shell lines run before a job, e.g. ["module load cuda/12.4", "source venv/bin/activate"]
    accelerate_config: str | None = None  # a cell with gpus_per_cell > 1 runs under `accelerate launch` with this shipped config
    python: str | None = None  # the interpreter jobs run (None: this one)

    def __post_init__(self):
        if self.kind not in KINDS:
            import difflib

            hint = difflib.get_close_matches(str(self.kind), KINDS, n=1)
            raise ValueError(f"launcher.kind {self.kind!r} is not a launcher" + (f"; did you mean {hint[0]!r}?" if hint else "")
                             + f" (one of {', '.join(KINDS)})")
        if self.jobs < (0 if self.kind == "slurm" else 1):
            raise ValueError(f"launcher.jobs must be >= 1, got {self.jobs}")
        if self.time_min < 2:
            raise ValueError("launcher.time_min must be >= 2 (submitit asks for its warning signal 90 s before the limit)")
        if self.accelerate_config is not None and self.accelerate_config not in ACCELERATE_CONFIGS:
            raise ValueError(f"launcher.accelerate_config must be one of {', '.join(ACCELERATE_CONFIGS)} (lfpo_bench/accelerate/), "
                             f"got {self.accelerate_config!r}")
        bad = [s for s in self.sbatch if not str(s).startswith("--")]
        if bad:
            raise ValueError(f"launcher.sbatch lines are sbatch options such as '--exclusive', got {bad[0]!r}")

    def poll(self) -> float:
        return self.poll_s if self.poll_s is not None else (0.5 if self.kind == "local" else 10.0)

    def worker_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.jobs))


def launcher_config(spec: dict, kind: str | None, jobs: int | None, where: str) -> LauncherConfig:
    """The launcher of a sweep: the file's ``launcher:`` section, then the flags (a flag and the file giving
    different values is an error, as for every other setting)."""
    from .config import build, merge_layers

    sec = spec.get("launcher") or {}
    if not isinstance(sec, dict):
        raise UserError(f"{where}: 'launcher' must be a mapping such as {{kind: slurm, partition: gpu}}, got {sec!r}")
    flags = {k: v for k, v in (("kind", kind), ("jobs", jobs)) if v is not None}
    vals, _ = merge_layers(LauncherConfig, [(f"{where} launcher:", sec, False), ("--launcher/--jobs", flags, False)], "launcher.")
    return build(LauncherConfig, vals, "launcher.")


# ----------------------------------------------------------------------------------------------- the worker side


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher local/slurm needs submitit: pip install 'lfpo-bench[cluster]' (or pip install submitit)") from None
    return submitit


def _checkpointable():
    try:
        from submitit.helpers import Checkpointable
    except ImportError:  # the class below still works inline; submitting it asks for submitit
        return object
    return Checkpointable


class CellJob(_checkpointable()):
    """One cell in a worker: the inline loop's ``run_cell``, its rows written to the cell's run folder. As a
    submitit ``Checkpointable`` it is requeued with the same arguments on preemption or timeout, and resumes
    from the run's last checkpoint (``run_cell`` always resumes)."""

    def __call__(self, cell, out: str, device: str, report_to: str, threads: int | None, accelerate: dict | None = None) -> int:
        from .outputs import write_atomic
        from .results import rows_text
        from .sweep import run_cell

        if not logging.getLogger().handlers:  # a job's log file gets the harness's info lines (resumed at update N, ...)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        out_p = Path(out)
        run_dir = out_p / "runs" / cell.id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CELL_ERROR).unlink(missing_ok=True)
        try:
            if accelerate:
                rows = _run_under_accelerate(cell, out_p, accelerate)
            else:
                import torch

                # local: cores // jobs; slurm: the CPUs of this job's allocation
                torch.set_num_threads(threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1))
                rows = run_cell(cell, out_p, device, show_progress=False, report_to=report_to)
        except BaseException as e:
            write_atomic(run_dir / CELL_ERROR, json.dumps({"error": f"{type(e).__name__}: {e}",
                                                           "traceback": traceback.format_exc()[-4000:]}) + "\n")
            raise
        write_atomic(run_dir / CELL_ROWS, rows_text(rows))
        return len(rows)


def _run_under_accelerate(cell, out: Path, acc: dict) -> list[dict]:
    """A multi-GPU cell: ``accelerate launch`` with a shipped config over this job's GPUs, each rank running
    ``python -m lfpo_bench.launch cell OUT CELL.json``; rank 0 writes the rows file this returns."""
    import subprocess
    import sys

    cfg = Path(__file__).parent / "accelerate" / f"{acc['config']}.yaml"
    spec = out / "runs" / cell.id / "cell.json"
    spec.write_text(json.dumps(asdict(cell)))
    rows_tmp = out / "runs" / cell.id / "rank0_rows.jsonl"
    rows_tmp.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg), "--num_processes", str(acc["gpus"]),
           "-m", "lfpo_bench.launch", "cell", str(out), str(spec), str(rows_tmp)]
    subprocess.run(cmd, check=True)
    return [json.loads(line) for line in rows_tmp.read_text().splitlines() if line.strip()]


def _rank_main(out: str, spec: str, rows_out: str) -> None:
    """Entry point of each rank of a multi-GPU cell (see ``_run_under_accelerate``)."""
    from .distributed import world
    from .outputs import write_atomic
    from .results import rows_text
    from .sweep import Cell, run_cell

    cell = Cell(**json.loads(Path(spec).read_text()))
    rows = run_cell(cell, Path(out), "auto", show_progress=False)
    if world().is_main:
        write_atomic(rows_out, rows_text(rows))


def timing_job(spec_path: str, out: str, device: str) -> int:
    """The sweep's timing pass as one job (SLURM): every done cell's settings in one schedule on one node."""
    from .config import load_file, resolve_device
    from .sweep import expand, read_state, time_cells, timing_config

    spec = load_file(spec_path)
    cells = expand(spec, spec_path)
    state = read_state(Path(out))
    return time_cells(Path(out), cells, state, timing_config(spec, spec_path), resolve_device(device), show_progress=False)


# ------------------------------------------------------------------------------------------- the supervisor side


@dataclass
class Running:
    cell: Any  # sweep.Cell
    job_id: str
    folder: str
    started: float = field(default_factory=time.time)
    job: Any = None  # the submitit Job when submitted by this process
    gpu: int | None = None
    reattached: bool = False  # submitted by an earlier supervisor (this one found it in cells.jsonl)
    boot: str | None = None  # the machine boot a local job was submitted on (None: not recorded, or this process's own)


def has_outcome(run_dir: Path) -> bool:
    """The cell's worker left its rows or its error: it ended by itself (not killed mid-way)."""
    return (run_dir / CELL_ROWS).exists() or (run_dir / CELL_ERROR).exists()


def _job_paths(folder: str, job_id: str):
    from submitit.core.utils import JobPaths

    return JobPaths(folder, job_id=job_id, task_id=0)


def log_tail(folder: str, job_id: str, n: int = 20) -> str:
    """The last ``n`` lines of a job's stderr then stdout (submitit's log files), '' when there are none."""
    try:
        paths = _job_paths(folder, job_id)
    except ImportError:
        return ""
    out = []
    for p in (paths.stderr, paths.stdout):
        try:
            lines = Path(p).read_text(errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            out.append("\n".join(lines[-n:]))
    return "\n".join(out)


def _pid_alive(pid: int) -> bool:
    """A live, non-zombie process that is a submitit controller (pids are reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"submitit" in cmd


def this_boot() -> str:
    """This machine and boot: a local job's pid means something only on the boot that gave it out."""
    import socket

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _pid_of_job(job_id: str, boot: str | None) -> bool:
    """Is a local job's controller alive? A folder restored elsewhere (a commit, a copy, a reboot) holds pids of
    another boot, which this machine may have given to unrelated processes since: those jobs are gone."""
    return (boot is None or boot == this_boot()) and _pid_alive(int(job_id))


def _local_alive(job_id: str, run_dir: Path, boot: str | None = None) -> bool:
    """A local job lives while its submitit controller does, or while a worker holds its cell's run folder."""
    return _pid_of_job(job_id, boot) or Lock.held(run_dir)


def job_state(kind: str, r: Running, out: Path) -> str:
    """RUNNING while the job may still produce a result; else the scheduler's final state (or FINISHED)."""
    run_dir = out / "runs" / r.cell.id
    if kind == "local":  # a reattached job has no submitit handle: its controller's pid stands for it
        st = r.job.state if r.job is not None else ("RUNNING" if _pid_of_job(r.job_id, r.boot) else "FINISHED")
        return "RUNNING" if st == "RUNNING" or Lock.held(run_dir) else st
    if r.job is None:
        r.job = _submitit().SlurmJob(folder=r.folder, job_id=r.job_id)
    st = slurm_state(r.job)
    if st in SLURM_ALIVE:
        if st == "UNKNOWN" and time.time() - r.started > 600 and not _squeue_has(r.job_id):
            return "LOST"  # neither accounting nor the queue knows the job
        return "RUNNING"
    return st


def slurm_state(job) -> str:
    """SLURM's state of a submitit job now (accounting asked afresh), its first word upper-cased."""
    return str(job.watcher.get_state(job.job_id, mode="force")).split()[0].upper()


def _squeue_has(job_id: str) -> bool:
    import subprocess

    try:
        p = subprocess.run(["squeue", "-h", "-j", job_id.split("_")[0]], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep waiting
    return p.returncode == 0 and bool(p.stdout.strip())


def make_executor(lc: LauncherConfig, folder: Path, name: str):
    submitit = _submitit()
    if lc.kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder), python=lc.python)
        threads = lc.worker_threads()
        ex.update_parameters(timeout_min=lc.time_min, setup=[f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}",
                                                               *lc.setup])
        return ex
    import shutil

    for tool in ("sbatch", "sacct"):
        if shutil.which(tool) is None:
            raise UserError(f"--launcher slurm needs `{tool}` on PATH (run the sweep on a SLURM login node, or try a local "
                            "cluster: bash bench/slurm_cluster.sh start); --launcher local runs workers on this machine")
    ex = submitit.SlurmExecutor(folder=str(folder), python=lc.python)
    params: dict[str, Any] = {"time": lc.time_min, "job_name": name[:60], "setup": list(lc.setup)}
    for k, v in (("partition", lc.partition), ("account", lc.account), ("qos", lc.qos), ("constraint", lc.constraint),
                 ("cpus_per_task", lc.cpus_per_task)):
        if v is not None:
            params[k] = v
    if lc.gpus_per_cell:
        params["gpus_per_node"] = lc.gpus_per_cell
    if lc.mem_gb is not None:
        params["mem"] = f"{int(lc.mem_gb * 1024)}MB"
    if lc.jobs:
        params["array_parallelism"] = lc.jobs
    extra = {}
    for line in lc.sbatch:
        k, _, v = line[2:].partition("=")
        extra[k.replace("-", "_")] = v if v else True
    if extra:
        params["additional_parameters"] = extra
    ex.update_parameters(**params)
    return ex


def _visible_gpus() -> list[int]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().isdigit()]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except ImportError:
        return []


def supervise(cells: list, todo: list, out: Path, lc: LauncherConfig, state, device: str, report_to: str,
              show_progress: bool, bar=None) -> None:
    """Run ``todo`` through the launcher and wait for every submitted cell (``state.submitted`` reattached
    first); merges finished cells into ``rows.jsonl`` and records failures, updating ``state``. A reattached
    local job that died unwatched is resubmitted if it is in ``todo`` (see ``interrupted``)."""
    from .results import append_rows, read_rows

    by_id = {c.id: c for c in cells}
    running: list[Running] = []
    for cid, rec in list(state.submitted.items()):
        if cid in by_id:
            running.append(Running(by_id[cid], str(rec["job_id"]), rec["folder"], started=rec.get("t", time.time()),
                                   reattached=True, boot=rec.get("boot")))
    waiting = [c for c in todo if c.id not in state.submitted]
    todo_ids = {c.id for c in todo}
    name = f"lfpo-{out.name}"
    gpus = _visible_gpus() if lc.kind == "local" and lc.gpus_per_cell else []
    if lc.kind == "local" and lc.gpus_per_cell and len(gpus) < lc.jobs:
        raise UserError(f"--jobs {lc.jobs} with one GPU per worker needs {lc.jobs} visible GPUs, found {len(gpus)}; "
                        "lower --jobs or set CUDA_VISIBLE_DEVICES")
    acc = ({"config": lc.accelerate_config or "ddp", "gpus": lc.gpus_per_cell}
           if lc.kind == "slurm" and lc.gpus_per_cell > 1 else None)
    threads = lc.worker_threads() if lc.kind == "local" else None
    submit_round = 0

    def submit(batch: list, gpu_of: dict[str, int | None]) -> None:
        nonlocal submit_round
        submit_round += 1
        folder = out / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{submit_round}"
        for c in batch:  # an earlier attempt's error must not be read as this one's
            (out / "runs" / c.id / CELL_ERROR).unlink(missing_ok=True)
        ex = make_executor(lc, folder, name)
        jobs = []
        if lc.kind == "slurm":
            try:
                with ex.batch():  # one job array
                    for c in batch:
                        jobs.append(ex.submit(CellJob(), c, str(out), "auto", report_to, threads, acc))
            except Exception as e:  # noqa: BLE001 - sbatch's own message says what the cluster refused
                raise UserError(f"SLURM refused the submission ({type(e).__name__}): {str(e).strip()[-1500:]}; check the "
                                "launcher: settings (partition, account, qos, time_min, gpus_per_cell) and `sinfo`") from None
        else:
            for c in batch:
                g = gpu_of.get(c.id)
                ex.update_parameters(gpus_per_node=1 if g is not None else 0, visible_gpus=(g,) if g is not None else ())
                jobs.append(ex.submit(CellJob(), c, str(out), device if g is None else "cuda", report_to, threads, None))
        recs, boot = [], this_boot()
        for c, j in zip(batch, jobs):
            r = Running(c, str(j.job_id), str(folder), job=j, gpu=gpu_of.get(c.id))
            running.append(r)
            state.submitted[c.id] = {"job_id": r.job_id, "folder": r.folder}
            recs.append({"cell": c.id, "label": c.label(), "status": "submitted", "launcher": lc.kind, "job_id": r.job_id,
                         "folder": r.folder, "t": round(r.started, 1), **({"boot": boot} if lc.kind == "local" else {})})
        append_rows(out / "cells.jsonl", recs)

    def finish(r: Running, st: str) -> None:
        run_dir = out / "runs" / r.cell.id
        base = {"cell": r.cell.id, "label": r.cell.label(), "launcher": lc.kind, "job_id": r.job_id, "folder": r.folder}
        rows_file, err_file = run_dir / CELL_ROWS, run_dir / CELL_ERROR
        if rows_file.exists() and not err_file.exists():
            rows = read_rows(rows_file)
            append_rows(out / "rows.jsonl", rows)  # then the done line: a crash between the two is undone on the next start
            append_rows(out / "cells.jsonl", [{**base, "status": "done", "seconds": round(time.time() - r.started, 1),
                                               "rows": len(rows)}])
            state.done.add(r.cell.id)
            state.failed.pop(r.cell.id, None)
        else:
            if err_file.exists():
                try:
                    e = json.loads(err_file.read_text())
                except ValueError:
                    e = {"error": f"job {r.job_id} ended ({st}); its error file is unreadable"}
            else:
                e = {"error": f"job {r.job_id} ended as {st} without a result (cancelled, timed out, preempted or killed); "
                              "--retry-failed resubmits it and training resumes from its last checkpoint"}
            tail = log_tail(r.folder, r.job_id)
            append_rows(out / "cells.jsonl", [{**base, "status": "failed", "state": st, "error": e["error"],
                                               "traceback": e.get("traceback", ""), "log_tail": tail[-4000:]}])
            log.error("cell %s failed: %s", r.cell.label(), e["error"])
            state.failed[r.cell.id] = e["error"]
        state.submitted.pop(r.cell.id, None)
        if bar is not None:
            bar.advance(1, cell=r.cell.label())

    def interrupted(r: Running) -> bool:
        """A local worker of an earlier run that ended unwatched, with neither rows nor an error: it died with
        that run's harness (a reboot, a closed session, SIGKILL), so it is resubmitted, not recorded as failed;
        training resumes from its last checkpoint. Under watch, a job that ends without a result has failed."""
        if not (r.reattached and lc.kind == "local") or has_outcome(out / "runs" / r.cell.id):
            return False
        r.reattached = False
        log.warning("cell %s (job %s) was stopped with an earlier run; resubmitting it (training resumes from its "
                    "last checkpoint)", r.cell.label(), r.job_id)
        append_rows(out / "cells.jsonl", [{"cell": r.cell.id, "label": r.cell.label(), "status": "interrupted",
                                           "launcher": lc.kind, "job_id": r.job_id, "folder": r.folder}])
        state.submitted.pop(r.cell.id, None)
        if r.cell.id in todo_ids:  # else (an inline rerun only waiting for old jobs) the caller runs it
            waiting.insert(0, r.cell)
        return True

    if lc.kind == "slurm" and waiting:
        submit(waiting, {})
        waiting = []
    while waiting or running:
        if lc.kind == "local":
            busy = {r.gpu for r in running if r.gpu is not None}
            while waiting and len(running) < lc.jobs:
                c = waiting.pop(0)
                g = next((g for g in gpus if g not in busy), None)  # one GPU per worker when the cells use GPUs
                if g is not None:
                    busy.add(g)
                submit([c], {c.id: g})
        for r in list(running):
            st = job_state(lc.kind, r, out)
            if st != "RUNNING":
                running.remove(r)
                if interrupted(r):
                    continue
                finish(r, st)
        if waiting or running:
            time.sleep(lc.poll())


def cell_states(folder: str | Path) -> list[dict]:
    """Every cell of a sweep folder with its state now: done, failed, queued, running (the scheduler asked
    for submitted cells), or not started; job id, elapsed seconds, and a failure's error and log tail."""
    from .config import load_file
    from .sweep import expand, read_state

    out = Path(folder)
    if not (out / "cells.jsonl").exists() and not (out / "sweep.yaml").exists():
        raise UserError(f"{out} is not a sweep folder (no cells.jsonl or sweep.yaml); give the folder a sweep wrote")
    state = read_state(out)
    cells = expand(load_file(out / "sweep.yaml"), str(out / "sweep.yaml")) if (out / "sweep.yaml").exists() else []
    labels = {c.id: c.label() for c in cells}
    for cid, rec in state.last.items():
        labels.setdefault(cid, rec.get("label", cid))
    now = time.time()
    rows = []
    for cid, label in labels.items():
        rec = state.last.get(cid)
        row = {"cell": cid, "label": label, "state": "not started", "job_id": "", "elapsed_s": None, "error": "", "log_tail": ""}
        if rec is not None:
            row["job_id"] = str(rec.get("job_id", ""))
            if rec["status"] == "done":
                row.update(state="done", elapsed_s=rec.get("seconds"))
            elif rec["status"] == "failed":
                tail = rec.get("log_tail") or ""
                row.update(state="failed", error=rec.get("error", ""), log_tail="\n".join(tail.splitlines()[-8:]))
            elif rec["status"] == "submitted":
                row.update(state=_live_state(rec, out, cid), elapsed_s=round(now - float(rec.get("t", now)), 1))
        rows.append(row)
    return rows


def _live_state(rec: dict, out: Path, cid: str) -> str:
    kind = rec.get("launcher", "local")
    if kind == "local":
        if _local_alive(rec["job_id"], out / "runs" / cid, rec.get("boot")):
            return "running"
        if has_outcome(out / "runs" / cid):
            return "ended (not merged yet: rerun the sweep command)"
        return "stopped unfinished (rerun the sweep command: it resubmits the cell, which resumes from its checkpoint)"
    try:
        st = slurm_state(_submitit().SlurmJob(folder=rec["folder"], job_id=str(rec["job_id"])))
    except Exception as e:  # noqa: BLE001 - status is best effort: say why
        return f"submitted (state unknown: {type(e).__name__})"
    if st in ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD"):
        return "queued"
    if st in SLURM_ALIVE:
        return "running"
    return f"ended as {st} (not merged yet: rerun the sweep command)"


def status_table(folder: str | Path) -> str:
    rows = cell_states(folder)
    counts: dict[str, int] = {}
    for r in rows:
        key = r["state"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{folder}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), "",
             "| cell | state | job | elapsed |", "|---|---|---|---|"]
    for r in rows:
        el = "" if r["elapsed_s"] is None else f"{r['elapsed_s']:.0f} s"
        lines.append(f"| {r['label']} | {r['state']} | {r['job_id']} | {el} |")
    for r in rows:
        if r["state"] == "failed":
            lines += ["", f"failed: {r['label']} (job {r['job_id'] or '-'}): {r['error']}"]
            if r["log_tail"]:
                lines += ["  " + line for line in r["log_tail"].splitlines()]
    return "\n".join(lines)


if __name__ == "__main__":  # a rank of a multi-GPU cell: python -m lfpo_bench.launch cell OUT CELL.json ROWS
    import sys

    if len(sys.argv) != 5 or sys.argv[1] != "cell":
        raise SystemExit("usage: python -m lfpo_bench.launch cell OUT CELL.json ROWS.jsonl")
    _rank_main(*sys.argv[2:])
