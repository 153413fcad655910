"""Decoding settings, declared once (torch-free).

- ``Decoding``: one frozen, self-validating setting. It is the sampler's only decoding argument
  (``sampler.generate(model, ids, mask, decoding)``), what evaluation rows record, and what rollouts use.
- ``DecodingSpec``: what a user asks to evaluate (lists expand; ``None`` = the task's shape or the model
  family's rule). The CLI options of ``eval`` and ``run`` and the ``eval:`` keys of a sweep file are derived
  from its fields (``cli.decoding_options``, ``sweep.EVAL_KEYS``), so a new knob is added here and nowhere else.
- ``RolloutConfig``: how training rolls out (``TrainConfig.rollout``; keys ``train.rollout.FIELD``): the
  shape (gen length, block, steps) resolved against the task in one place, the shared or per-method rule, and
  the speed switches (LoRA merge, TF32, prefix cache).

The recorded form of a setting (``Decoding.record()``) carries ``schema``: bump ``SCHEMA`` when a field is
added, so rows of different schemas never share a config hash by accident.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .types import UserError

REMASKING = ("low_confidence", "random", "maskgit_plus", "topk_margin", "entropy")
SCHEDULES = ("even", "dream")
SCHEMA = 2  # 1: rows before 2026-12 (later-added options omitted when at their default); 2: every field recorded
# the decoding rule: what a model family may recommend (``FamilyProfile.recommended``) and the user may override
RULE_FIELDS = ("temperature", "remasking", "schedule", "top_p", "top_k", "logits_eos_inf", "confidence_eos_eot_inf")


class DecodingError(UserError, ValueError):
    """An invalid decoding setting (a ``UserError`` for the CLI, a ``ValueError`` for library callers)."""


def check_schedule(gen_length: int, block_length: int, steps: int, threshold: float | None) -> int:
    """Validate the block/step arithmetic; returns steps per block (0 in threshold mode)."""
    if gen_length <= 0 or block_length <= 0:
        raise DecodingError(f"gen_length ({gen_length}) and block_length ({block_length}) must be positive")
    if gen_length % block_length:
        raise DecodingError(
            f"gen_length={gen_length} is not divisible by block_length={block_length}; "
            f"pick a block length that divides it (e.g. {math.gcd(gen_length, block_length) or gen_length})"
        )
    n_blocks = gen_length // block_length
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise DecodingError(f"threshold must be in (0, 1], got {threshold}")
        return 0
    if steps <= 0:
        raise DecodingError(f"steps must be positive, got {steps}")
    if steps % n_blocks:
        raise DecodingError(
            f"steps={steps} is not divisible by the number of blocks ({gen_length}/{block_length}={n_blocks}); "
            f"use a multiple of {n_blocks}"
        )
    if steps // n_blocks > block_length:
        raise DecodingError(
            f"steps={steps} gives {steps // n_blocks} steps per block but a block has only {block_length} "
            f"tokens; use at most {n_blocks * block_length} steps"
        )
    return steps // n_blocks


def _int(name: str, v: Any, lo: int = 1, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise DecodingError(f"{name} = {v!r}: must be an integer >= {lo}")
    return v


def check_cfg_scale(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise DecodingError(f"cfg_scale = {v!r}: the guidance scale must be >= 0 (0 = off)")


def check_rule(temperature: Any, remasking: Any, schedule: Any, top_p: Any, top_k: Any) -> None:
    """The rule's values, whichever object holds them (``Decoding``, ``DecodingSpec``, a rollout config)."""
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not temperature >= 0):
        raise DecodingError(f"temperature = {temperature!r}: must be a number >= 0 (0 = greedy)")
    if remasking is not None and remasking not in REMASKING:
        hint = (difflib.get_close_matches(str(remasking), REMASKING, n=1)
                or [r for r in REMASKING if r.startswith(str(remasking)[:3])])
        raise DecodingError(f"remasking {remasking!r} is not a remasking rule; choose one of {', '.join(REMASKING)}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if schedule is not None and schedule not in SCHEDULES:
        raise DecodingError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)} (even: LLaDA's split; dream: Dream's)")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise DecodingError(f"top_p = {top_p!r}: must be in (0, 1]")
    if top_k is not None:
        _int("top_k", top_k)


@dataclass(frozen=True)
class Decoding:
    gen_length: int  # generated tokens L
    steps: int  # denoising steps (threshold decoding: an upper bound, set to L)
    block_length: int | None = None  # semi-autoregressive block (None: one block, the whole canvas)
    temperature: float = 0.0  # 0 = greedy argmax; > 0: Gumbel-max sampling
    remasking: str = "low_confidence"  # confidence rule (REMASKING)
    threshold: float | None = None  # confidence-threshold parallel decoding (steps then adapt)
    cfg_scale: float = 0.0  # classifier-free guidance scale (0 = off)
    use_cache: bool = False  # prefix KV cache, recomputed once per block (approximate)
    stop_at_eos: bool = False  # fill the remaining blocks with EOS once every row has ended
    schedule: str = "even"  # tokens per step: "even" (LLaDA) | "dream" (Dream/DiffuCoder)
    top_p: float | None = None  # nucleus filtering before x0 is drawn
    top_k: int | None = None  # top-k filtering before x0 is drawn
    logits_eos_inf: bool = False  # EOS can never be drawn (LLaDA's HumanEval setting)
    confidence_eos_eot_inf: bool = False  # end tokens get confidence 0 (LLaDA's GSM8K-512/Math/MBPP setting)

    def __post_init__(self):
        _int("gen_length", self.gen_length)
        _int("steps", self.steps)
        if self.block_length is None:
            object.__setattr__(self, "block_length", self.gen_length)
        _int("block_length", self.block_length)
        check_rule(self.temperature, self.remasking, self.schedule, self.top_p, self.top_k)
        check_cfg_scale(self.cfg_scale)
        for name in ("use_cache", "stop_at_eos", "logits_eos_inf", "confidence_eos_eot_inf"):
            if not isinstance(getattr(self, name), bool):
                raise DecodingError(f"{name} = {getattr(self, name)!r}: must be true or false")
        if self.use_cache and self.cfg_scale > 0:
            raise DecodingError("use_cache with CFG is not supported; drop one of them")
        check_schedule(self.gen_length, self.block_length, self.steps, self.threshold)

    @property
    def label(self) -> str:
        return "fixed" if self.threshold is None else f"threshold={self.threshold:g}"

    @property
    def steps_per_block(self) -> int:
        return check_schedule(self.gen_length, self.block_length, self.steps, self.threshold)

    def record(self) -> dict:
        """The setting as rows record it (and hash it): every field, and the schema version."""
        return {**asdict(self), "schema": SCHEMA}

    @classmethod
    def from_record(cls, d: dict) -> Decoding:
        """A setting from its recorded form (either schema: schema-1 rows omit options at their defaults)."""
        return cls(**{k: v for k, v in d.items() if k != "schema"})


def _opt(flag: str, help: str, default: Any = None, kind: str = "value") -> Any:
    """A ``DecodingSpec`` field with its CLI flag and help (``kind``: value | list | flag | tristate)."""
    return field(default=default, metadata={"flag": flag, "help": help, "kind": kind})


@dataclass(frozen=True)
class DecodingSpec:
    """The decoding settings to evaluate. Lists expand (gen length x block length x steps, plus one setting per
    threshold); ``None`` and empty lists mean the task's shape and the model family's rule."""

    gen_length: tuple[int, ...] = _opt("--gen-length", "generated tokens L, one or a comma list (default: the task's)", (), "list")
    block_length: tuple[int, ...] = _opt("--block-length", "semi-autoregressive block length(s) (default: the task's; "
                                         "Dream/DiffuCoder: the whole canvas)", (), "list")
    steps: tuple[int, ...] = _opt("--steps", "comma-separated step counts, e.g. 2,4,8,16 (default: the task's sweep)", (), "list")
    steps_ratio: float | None = _opt("--steps-ratio", "steps = ratio x gen length, e.g. 0.5 (instead of --steps)")
    thresholds: tuple[float, ...] = _opt("--threshold", "also decode with confidence threshold(s), e.g. 0.9", (), "list")
    temperature: float | None = _opt("--temperature", "0 = greedy (default: the model family's rule; greedy for LLaDA and tiny)")
    remasking: str | None = _opt("--remasking", "confidence rule: " + " | ".join(REMASKING) + " (default: the family's; "
                                 "Dream/DiffuCoder: entropy)")
    schedule: str | None = _opt("--schedule", "tokens per step: even (LLaDA) | dream (default: the family's)")
    top_p: float | None = _opt("--top-p", "nucleus filtering before x0 is drawn (default: the family's)")
    top_k: int | None = _opt("--top-k", "top-k filtering before x0 is drawn")
    logits_eos_inf: bool | None = _opt("--logits-eos-inf", "never draw EOS (LLaDA's HumanEval setting)", None, "tristate")
    confidence_eos_eot_inf: bool | None = _opt("--confidence-eos-eot-inf", "end tokens get confidence 0 (LLaDA's "
                                               "GSM8K-512/Math/MBPP setting)", None, "tristate")
    cfg_scale: float = _opt("--cfg", "classifier-free guidance scale", 0.0)
    use_cache: bool = _opt("--use-cache", "prefix KV cache, recomputed once per block (approximate)", False, "flag")
    stop_at_eos: bool = _opt("--stop-at-eos", "stop once every sample has ended with EOS", False, "flag")

    def __post_init__(self):
        for name in ("gen_length", "block_length", "steps", "thresholds"):
            v = getattr(self, name)
            v = tuple(v) if isinstance(v, (list, tuple)) else (() if v is None else (v,))
            object.__setattr__(self, name, v)
        for name in ("gen_length", "block_length", "steps"):
            for x in getattr(self, name):
                _int(name, x)
        for th in self.thresholds:
            if isinstance(th, bool) or not isinstance(th, (int, float)) or not 0 < th <= 1:
                raise DecodingError(f"threshold {th!r}: must be in (0, 1]")
        if self.steps_ratio is not None:
            if isinstance(self.steps_ratio, bool) or not isinstance(self.steps_ratio, (int, float)) or not 0 < self.steps_ratio <= 1:
                raise DecodingError(f"steps_ratio = {self.steps_ratio!r}: must be in (0, 1] (steps = ratio x gen length)")
            if self.steps:
                raise DecodingError(f"steps {list(self.steps)} and steps_ratio {self.steps_ratio} both given: they set the "
                                    "same thing; keep one")
        check_rule(self.temperature, self.remasking, self.schedule, self.top_p, self.top_k)
        check_cfg_scale(self.cfg_scale)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, d: dict, where: str = "eval") -> DecodingSpec:
        """From a sweep file's ``eval:`` section (or any mapping of field names): unknown keys are errors."""
        from .config import build

        return build(cls, dict(d), f"{where}.")

    def rule(self, profile=None) -> dict:
        """The decoding rule: what was given, else the model family's own (``profile.recommended``: Dream and
        DiffuCoder decode with Dream's schedule, entropy confidence and top-p sampling), else LLaDA's greedy
        low-confidence rule."""
        base = {f.name: f.default for f in fields(Decoding) if f.name in RULE_FIELDS}
        rec = getattr(profile, "recommended", None) or {}
        return {k: getattr(self, k) if getattr(self, k) is not None else rec.get(k, base[k]) for k in RULE_FIELDS}

    def expand(self, task, profile=None) -> list[Decoding]:
        """Every setting of this spec on ``task`` for a model of ``profile`` (None: before the model is loaded;
        the same checks run, so a bad combination fails before any model work)."""
        rule = self.rule(profile)
        out = []
        for L in self.gen_length or (task.gen_length,):
            for blk in self.block_length or (None,):
                blk = blk or (L if whole_canvas(profile) else min(task.block_length, L))
                steps = ((max(1, int(L * self.steps_ratio)),) if self.steps_ratio is not None
                         else self.steps or tuple(task.eval_steps or (task.steps,)))
                common = dict(cfg_scale=self.cfg_scale, use_cache=self.use_cache, stop_at_eos=self.stop_at_eos, **rule)
                out += [Decoding(L, s, blk, **common) for s in steps]
                out += [Decoding(L, L, blk, threshold=th, **common) for th in self.thresholds]
        return out


def whole_canvas(profile) -> bool:
    """Does the family rank masked positions over the whole canvas (Dream: one block = the generated length)?"""
    rec = getattr(profile, "recommended", None) or {}
    return bool(rec.get("block_length")) and rec.get("block_length") == rec.get("gen_length")


LORA_MODES = ("merge", "bf16", "plain")  # see fast_rollout.py


@dataclass(frozen=True)
class RolloutConfig:
    """Training rollouts. Shape fields left ``None`` are the task's (its RL rollout steps, its length and block);
    ``decoding`` says whose rule rolls out: ``shared`` (every method with ``temperature``/``remasking``) or
    ``method`` (each method's own preference, ``Method.temperature``/``remasking``)."""

    steps: int | None = None  # denoising steps of rollouts (None: the task's rollout steps)
    gen_length: int | None = None  # generated length (None: the task's)
    block_length: int | None = None  # block length (None: the task's)
    batch: int = 256  # rows per generate call
    lora: str = "merge"  # LoRA in rollouts: "merge" (folded into the base weights, restored exactly) | "bf16" | "plain"
    tf32: bool = False  # TF32 float32 matmuls in rollouts (CUDA)
    use_cache: bool = False  # prefix KV cache in rollouts (native LLaDA; approximate)
    decoding: str = "shared"  # "shared": every method rolls out with the two below; "method": each method's own rule
    temperature: float = 0.9  # rollout temperature of every method under decoding=shared
    remasking: str = "low_confidence"  # rollout remasking of every method under decoding=shared

    def __post_init__(self):
        if self.lora not in LORA_MODES:
            raise ValueError(f"train.rollout.lora must be one of {', '.join(LORA_MODES)}, got {self.lora!r}")
        if self.decoding not in ("method", "shared"):
            raise ValueError(f"train.rollout.decoding must be 'method' or 'shared', got {self.decoding!r}")
        check_rule(self.temperature, self.remasking, None, None, None)
        for name in ("steps", "gen_length", "block_length", "batch"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"train.rollout.{name} must be >= 1, got {v}")

    def resolve(self, task) -> tuple[int, int, int]:
        """(L, block, steps) on ``task``: given values, else the task's RL rollout steps and its shape."""
        L = self.gen_length or task.gen_length
        blk = self.block_length or min(task.block_length, L)
        steps = self.steps or getattr(task, "rollout_steps", None) or task.steps
        return L, blk, steps

    def rule(self, method) -> tuple[float, str]:
        """(temperature, remasking) of ``method``'s rollouts: the shared rule, or the method's own preference."""
        if self.decoding == "shared":
            return self.temperature, self.remasking
        return method.temperature, method.remasking

    def decoding_for(self, task, method) -> Decoding:
        """The sampler setting of ``method``'s rollouts on ``task``."""
        L, blk, steps = self.resolve(task)
        temp, remasking = self.rule(method)
        return Decoding(L, steps, blk, temperature=temp, remasking=remasking, use_cache=self.use_cache)
