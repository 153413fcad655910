"""The typed records that flow between stages (see docs/design.md).

Each arrow of the pipeline is one function call that takes and returns these:
task -> ``Example``; sampler -> ``Generation``; trainer -> ``RolloutBatch``;
method -> ``LossOut``; sandbox -> ``ExecResult``; runner -> ``ResultRow``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep `lfpo-bench list` free of the torch import
    import torch


class UserError(Exception):
    """An error caused by input the user can fix (bad name, missing file, bad config).

    The CLI prints its message without a traceback; the message must say what is wrong and how to fix it.
    """


@dataclass
class Example:
    """One problem of a task. ``answer`` is whatever ``score`` needs (gold number, solution grid, tests)."""

    id: str
    question: str
    answer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """Output of ``sampler.generate`` for a (left-padded) batch of prompts.

    ``commit_step[b, j]`` is the index of the forward pass (0-based, counted over the whole generation)
    whose prediction committed completion token j. The state fed to forward pass s is therefore:
    completion tokens with ``commit_step < s`` clean, all others masked. Positions filled without a forward
    pass (EOS fill after an early stop) get ``steps``, a virtual pass after the last one.
    """

    sequences: torch.Tensor  # [B, P+L] prompt (left padded) + completion
    completion: torch.Tensor  # [B, L]
    prompt_len: int  # P
    nfe: int  # forward passes of the model (a CFG step counts 2)
    steps: int  # denoising iterations actually run (== nfe without CFG)
    nfe_per_sample: torch.Tensor | None = None  # [B] passes during which the row still had masks in its block
    commit_step: torch.Tensor | None = None  # [B, L] int64, when record_trajectory=True
    commit_logp: torch.Tensor | None = None  # [B, L] log p(token | state) at its commit pass, when recorded


@dataclass
class RolloutBatch:
    """G completions for each of a set of prompts, with rewards and advantages. Rows are grouped:
    rows ``g*G .. g*G+G-1`` share prompt g."""

    prompt_ids: torch.Tensor  # [N, P] left padded
    prompt_mask: torch.Tensor  # [N, P] 1 = real token
    completion_ids: torch.Tensor  # [N, L]
    completion_mask: torch.Tensor  # [N, L] 1 up to and including the first EOS
    commit_step: torch.Tensor  # [N, L]
    rewards: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N]
    group_size: int  # G
    steps: int  # denoising iterations used by the rollout sampler
    mask_id: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, idx: torch.Tensor | slice) -> RolloutBatch:
        """Rows ``idx`` (a micro-batch). Group structure is not preserved; methods needing it use advantages."""
        import torch

        sel = {
            k: (v[idx] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.n else v)
            for k, v in self.extras.items()
        }
        return RolloutBatch(
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            completion_ids=self.completion_ids[idx],
            completion_mask=self.completion_mask[idx],
            commit_step=self.commit_step[idx],
            rewards=self.rewards[idx],
            advantages=self.advantages[idx],
            group_size=self.group_size,
            steps=self.steps,
            mask_id=self.mask_id,
            extras=sel,
        )


def float_(x) -> float:
    """A metric value as a float, detached (no autograd warning)."""
    return float(x.detach()) if hasattr(x, "detach") else float(x)


@dataclass
class LossOut:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ExecResult:
    """Result of running one untrusted program. ``status`` is one of pass, fail, timeout, oom, error."""

    status: str
    seconds: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    detail: str = ""
    value: Any = None  # what the check returned (e.g. a partial-credit fraction)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class ResultRow:
    """One tidy results row: one (method, task, model, gen length, steps, block, decoding, seed) cell.

    ``scores`` holds the per-problem score in the order of ``problem_ids`` so that confidence intervals
    and paired tests can be computed later from the rows alone.
    """

    method: str
    task: str
    model: str
    split: str
    gen_length: int
    steps: int
    block_length: int
    decoding: str  # "fixed" or "threshold=0.9"
    temperature: float
    remasking: str
    seed: int
    n: int
    accuracy: float
    nfe_mean: float
    latency_ms_p50: float
    latency_ms_p95: float
    tokens_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    metric_scores: dict[str, list[float]] = field(default_factory=dict)  # per-problem values of each extra metric
    problem_ids: list[str] = field(default_factory=list)
    nfe: list[float] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)  # the timing pass (``timing.py``); empty when not timed
    # provenance
    run_id: str = ""
    cell: str = ""
    checkpoint: str = ""
    git_sha: str = ""
    config_hash: str = ""
    dataset_sha256: str = ""
    device: str = ""
    torch_version: str = ""
    created: str = ""
    stage: str = "eval"  # "before" / "after" for run, "eval" for plain eval
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
