"""Work functions behind the CLI's ``eval`` (and, in ``run.py``/``sweep.py``, training and sweeps).

Each takes plain arguments, does the work, writes rows, and returns them; the CLI only parses and prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .evaluate import RULE_KEYS, decoding_grid, decoding_rule, evaluate, whole_canvas
from .registry import TASKS
from .results import append_rows
from .timing import TimingConfig, attach
from .types import ResultRow, UserError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but CUDA is not available here; use --device cpu")
    return device


def make_task(name: str, data: str | None = None):
    cls = TASKS.get(name)
    return cls(data_path=data) if isinstance(cls, type) else cls


@dataclass
class EvalArgs:
    task: str
    model: str | None = None
    split: str | None = None
    gen_length: int | None = None
    steps: list[int] = field(default_factory=list)
    block_length: int | None = None
    thresholds: list[float] = field(default_factory=list)
    temperature: float | None = None  # None: the model family's own rule (evaluate.decoding_rule)
    remasking: str | None = None
    schedule: str | None = None
    top_p: float | None = None
    top_k: int | None = None
    logits_eos_inf: bool | None = None
    confidence_eos_eot_inf: bool | None = None
    cfg_scale: float = 0.0
    use_cache: bool = False
    stop_at_eos: bool = False
    seed: int = 0
    batch_size: int = 64
    limit: int | None = None
    n_samples: int = 1
    out: str | None = None
    device: str = "auto"
    data: str | None = None
    show_progress: bool = True
    timing: TimingConfig | None = None  # the timing pass (None: defaults; reps=0: none)


def default_out(kind: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("results") / kind / f"{stamp}.jsonl"


def check_positive(**flags: int | None) -> None:
    """Count options (given by flag name) must be >= 1 when set; a ``UserError`` names the first that is not."""
    for flag, v in flags.items():
        if v is not None and v < 1:
            raise UserError(f"{flag} {v}: must be >= 1" + (" (omit it to evaluate every problem)" if flag == "--limit" else ""))


def run_eval(a: EvalArgs) -> tuple[list[ResultRow], Path, bool]:
    """Returns (rows, rows file, is_main). Under ``accelerate launch`` problems are sharded across ranks and
    rank 0 alone writes rows and samples."""
    from .distributed import world
    from .models.loader import load_model
    from .results import check_output_file

    check_positive(**{"--n-samples": a.n_samples, "--batch-size": a.batch_size, "--limit": a.limit})
    (a.timing or TimingConfig()).check()
    task = make_task(a.task, a.data)
    given = {k: getattr(a, k) for k in RULE_KEYS}

    def grid(profile=None):
        blk = a.block_length or (a.gen_length or task.gen_length if whole_canvas(profile) else None)  # Dream: one block
        return decoding_grid(task, gen_length=a.gen_length, steps=a.steps or None, block_length=blk,
                             thresholds=a.thresholds, cfg_scale=a.cfg_scale, use_cache=a.use_cache, stop_at_eos=a.stop_at_eos,
                             **decoding_rule(profile, **given))

    decodings = grid()  # checked now, before any model work
    device = resolve_device(a.device)
    model_spec = a.model or task.default_model
    out = check_output_file(a.out or default_out("eval"))
    task.load(a.split or task.eval_split)  # data problems surface now, not after the model has loaded
    dist = world()
    with dist.main_first():  # a missing cached tiny model is pretrained once
        lm = load_model(model_spec, task=task, device=device, quiet=not a.show_progress)
    decodings = grid(lm.profile)  # the family's own rule where the user gave none
    samples = None
    if dist.world_size > 1:  # every rank must name the same file; rank 0's choice wins
        out = Path(dist.gather_objects(str(out))[0])
    if getattr(task, "uses_sandbox", False) and dist.is_main:
        from .codeexec import samples_writer

        samples = samples_writer(out.with_suffix(".samples.jsonl"), task)
    rows = evaluate(
        lm, task, decodings, split=a.split, seed=a.seed, batch_size=a.batch_size, limit=a.limit,
        model_name=model_spec if model_spec != "tiny" else lm.name, show_progress=a.show_progress,
        samples_out=samples, n_samples=a.n_samples, dist=dist,
    )
    tcfg = a.timing or TimingConfig()
    if tcfg.reps and dist.world_size == 1:  # latency from its own pass (a multi-process run is not timed)
        problems = task.load(a.split or task.eval_split)[: a.limit]
        attach(rows, lm, task, decodings, problems, tcfg, batch_size=a.batch_size, seed=a.seed,
               show_progress=a.show_progress, group=out.stem)
    if dist.is_main:
        append_rows(out, [r.to_dict() for r in rows])
    return rows, out, dist.is_main
