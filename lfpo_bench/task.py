"""The task interface. A task is one small module in ``tasks/``; its ``score`` is both the RL reward and the
reported metric, so training and evaluation cannot drift apart.

A task class declares its data source, default model, family and decoding shape as class attributes (how hard
to train a model is the model profile's: ``models/profiles.py``) and
implements ``load``, ``prompt``, ``extract`` and ``score``. Extra per-problem metrics (solved rate, pass
counts) come from ``metrics``. Code tasks override ``score_batch`` to run many programs in parallel in
the sandbox; everything else gets the default loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .data import Loaded, records_sha256
from .types import Example, UserError


@dataclass
class Scored:
    score: float
    metrics: dict[str, float]


class Task:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""  # public source, shown by `lfpo-bench list`
    default_model: ClassVar[str] = "tiny"
    tiny_pretrain: ClassVar[str | None] = None  # synthetic task the tiny model is pretrained on for this task
    synthetic: ClassVar[bool] = False  # data generated with a seed, learnable by the tiny model
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    train_split: ClassVar[str] = "train"
    val_split: ClassVar[str] = "validation"
    eval_split: ClassVar[str] = "test"
    gen_length: ClassVar[int] = 256
    steps: ClassVar[int] = 128
    block_length: ClassVar[int] = 32
    eval_steps: ClassVar[tuple[int, ...]] = ()  # default decoding sweep of `eval`/`run` (empty: just `steps`)
    train_task: ClassVar[str | None] = None  # RL trains (and validates) on this task instead, e.g. humaneval -> mbpp
    rollout_steps: ClassVar[int | None] = None  # RL rollout (and validation) steps (None: ``steps``)
    family: ClassVar[str] = ""  # sudoku | countdown | math | code: keys methods' per-task defaults (Method.defaults_by_family)
    uses_sandbox: ClassVar[bool] = False

    def __init__(self, data_path: str | None = None):
        self.data_path = data_path
        self._cache: dict[str, tuple[list[Example], str]] = {}

    # ---- data ---------------------------------------------------------------------------------------
    def data_for(self, split: str) -> str | None:
        """The ``--data`` override that applies to ``split``: a folder covers every split (each split's file
        by its declared name), a file only the evaluated split (never the training or validation split)."""
        if not self.data_path:
            return None
        from pathlib import Path

        return self.data_path if Path(self.data_path).expanduser().is_dir() or split not in (self.train_split, self.val_split) else None

    def load(self, split: str) -> list[Example]:
        """Examples of ``split``. Cached per instance."""
        return self.load_with_hash(split)[0]

    def load_with_hash(self, split: str) -> tuple[list[Example], str]:
        if split not in self.splits:
            raise UserError(f"task {self.name!r} has no split {split!r}; it has {list(self.splits)}")
        if split not in self._cache:
            exs = self._load(split)
            sha = records_sha256([{"id": e.id, "q": e.question, "a": _jsonable(e.answer)} for e in exs])
            self._cache[split] = (exs, sha)
        return self._cache[split]

    def _load(self, split: str) -> list[Example]:
        raise NotImplementedError

    @staticmethod
    def examples_from(loaded: Loaded, make) -> list[Example]:
        return [make(i, r) for i, r in enumerate(loaded.records)]

    # ---- prompting and scoring ---------------------------------------------------------------------------
    def problem(self, ex: Example) -> str:
        """The problem itself, without instructions (data: what a model trained on this task sees)."""
        return ex.question

    def instructed(self, ex: Example) -> str:
        """The problem with the instructions an instruction-tuned model needs: what to do and the answer format
        that ``extract`` reads."""
        raise NotImplementedError

    def prompt(self, ex: Example, style: str = "chat") -> str:
        """The prompt in a model profile's style (``FamilyProfile.prompt_style``): "compact" is the bare
        ``problem`` (the tiny model, trained on it), "chat" the ``instructed`` text. Which one a model gets is
        the model profile's choice, not the task's."""
        if style == "compact":
            return self.problem(ex)
        if style == "chat":
            return self.instructed(ex)
        raise ValueError(f"unknown prompt style {style!r}; expected 'compact' or 'chat'")

    def extract(self, completion: str) -> Any:
        raise NotImplementedError

    def score(self, ex: Example, completion: str) -> float:
        raise NotImplementedError

    def metrics(self, ex: Example, completion: str) -> dict[str, float]:
        return {}

    def score_batch(self, examples: list[Example], completions: list[str]) -> list[Scored]:
        return [Scored(float(self.score(e, c)), self.metrics(e, c)) for e, c in zip(examples, completions)]

    # ---- synthetic tasks ---------------------------------------------------------------------------
    def sft_target(self, ex: Example) -> str:
        """The reference completion used by `lfpo-bench pretrain` (synthetic tasks only)."""
        raise UserError(f"task {self.name!r} has no SFT target; pretrain on a synthetic task")

    @classmethod
    def summary(cls) -> dict[str, Any]:
        return {
            "task": cls.name,
            "source": cls.source,
            "model": cls.default_model,
            "splits": (f"{cls.train_task}:{cls.train_split}/{cls.train_task}:{cls.val_split}/{cls.eval_split}" if cls.train_task
                       else f"{cls.train_split}/{cls.val_split}/{cls.eval_split}"),
            "gen_length": cls.gen_length,
            "steps": cls.steps,
            "block": cls.block_length,
        }


def _jsonable(x: Any) -> Any:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return repr(x)
