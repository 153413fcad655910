"""``lfpo-bench eval``: evaluate a model (no training) over a decoding spec and write its rows.

``train_job.py`` is ``lfpo-bench run`` (train one method, evaluate before and after); both go through the one
evaluation stage, ``evaluate.evaluation_stage``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import make_task, resolve_device
from .decoding import DecodingSpec
from .evaluate import EvalOptions, evaluation_stage
from .results import append_rows
from .timing import TimingConfig
from .types import ResultRow

log = logging.getLogger(__name__)


@dataclass
class EvalArgs:
    task: str
    model: str | None = None
    decoding: DecodingSpec = field(default_factory=DecodingSpec)
    opts: EvalOptions = field(default_factory=EvalOptions)
    out: str | None = None
    device: str = "auto"
    data: str | None = None
    show_progress: bool = True
    timing: TimingConfig | None = None  # the timing pass (None: defaults; reps=0: none)


def default_out(kind: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("results") / kind / f"{stamp}.jsonl"


def model_label(spec: str, lm) -> str:
    """The name rows carry: the spec the user gave, except the cached tiny model, named by its checkpoint."""
    return lm.name if spec == "tiny" else spec


def run_eval(a: EvalArgs) -> tuple[list[ResultRow], Path, bool]:
    """Returns (rows, rows file, is_main). Under ``accelerate launch`` problems are sharded across ranks and
    rank 0 alone writes rows and samples."""
    from .distributed import world
    from .models.loader import load_model
    from .outputs import check_file

    a.opts.check()
    timing = (a.timing or TimingConfig()).check()
    task = make_task(a.task, a.data)
    a.decoding.expand(task)  # checked now, before any model work
    device = resolve_device(a.device)
    model_spec = a.model or task.default_model
    out = check_file(a.out or default_out("eval"), "rows", "--out", "rows.jsonl")
    task.load(a.opts.split or task.eval_split)  # data problems surface now, not after the model has loaded
    dist = world()
    with dist.main_first():  # a missing cached tiny model is pretrained once
        lm = load_model(model_spec, task=task, device=device, quiet=not a.show_progress)
    decodings = a.decoding.expand(task, lm.profile)  # the family's own rule where the user gave none
    samples = None
    if dist.world_size > 1:  # every rank must name the same file; rank 0's choice wins
        out = Path(dist.gather_objects(str(out))[0])
    if getattr(task, "uses_sandbox", False) and dist.is_main:
        from .codeexec import samples_writer

        samples = samples_writer(out.with_suffix(".samples.jsonl"), task)
    rows = evaluation_stage(lm, task, decodings, a.opts, timing=timing, model_name=model_label(model_spec, lm), dist=dist,
                            show_progress=a.show_progress, samples_out=samples, group=out.stem)
    if dist.is_main:
        append_rows(out, [r.to_dict() for r in rows])
    return rows, out, dist.is_main
