"""Name -> object registries for tasks and methods, in the manner of lm-eval's ``api/registry.py``.

- Built-ins are listed here as ``"module:attr"`` strings with a one-line description; a module is imported
  only when its name is asked for (its decorator then registers it), so listing names imports nothing.
- Third-party plugins come from the entry-point groups ``lfpo_bench.tasks`` / ``lfpo_bench.methods``,
  loaded tolerantly: a broken plugin is reported, not fatal, unless it is the one asked for.
- ``get("path/to/file.py:Name")`` or ``get("pkg.mod:Name")`` loads an object directly.
- Duplicate names are errors; misses say "did you mean".
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import is_dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from .types import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_object(spec: str) -> Any:
    """Load ``"path/to/file.py:Name"`` or ``"package.module:Name"``."""
    if ":" not in spec:
        raise UserError(f"{spec!r} is not a plugin spec; write 'path/to/file.py:Name' or 'package.module:Name'")
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise UserError(f"plugin file {str(path)!r} not found (from {spec!r})")
        mod_name = f"lfpo_bench_plugin_{abs(hash(str(path.resolve())))}"
        if mod_name in sys.modules:
            module = sys.modules[mod_name]
        else:
            sp = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(sp)
            sys.modules[mod_name] = module
            try:
                sp.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise UserError(f"importing plugin file {str(path)!r} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UserError(f"cannot import module {target!r} (from {spec!r}): {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        hint = difflib.get_close_matches(attr, names, n=3)
        raise UserError(
            f"{target!r} has no attribute {attr!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")
        ) from None


class Registry(Generic[T]):
    """Names to objects. ``builtins`` maps each built-in name to ``("module:attr", one-line description)``:
    nothing is imported until that name is asked for, so ``lfpo-bench list`` imports no model code (no torch)."""

    def __init__(self, kind: str, check: Callable[[Any], str | None], builtins: dict[str, tuple[str, str]], group: str):
        self.kind = kind
        self._check = check  # returns an error message, or None when the object is acceptable
        self._builtins = dict(builtins)
        self._group = group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {name: "builtin" for name in builtins}
        self._plugins_loaded = False
        self._plugins: dict[str, Any] = {}  # name -> entry point, loaded on first use
        self.plugin_errors: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, origin: str = "builtin"):
        """Register ``obj`` under ``name`` (as a decorator too); the object takes its ``name`` from here."""

        def deco(o: T) -> T:
            err = self._check(o)
            if err:
                raise TypeError(f"cannot register {self.kind} {name!r}: {err}")
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._origin[name]})")
            if name in self._builtins and origin != "builtin":
                raise ValueError(f"{self.kind} {name!r} is a built-in name; a plugin must choose another")
            own = o.__dict__.get("name") if isinstance(o, type) else getattr(o, "name", None)
            if own and own != name:
                raise ValueError(f"{self.kind} {name!r}: the object says name = {own!r}; drop that line, the registration names it")
            try:
                o.name = name
            except (AttributeError, TypeError):
                pass
            self._items[name] = o
            self._origin.setdefault(name, origin)
            return o

        return deco(obj) if obj is not None else deco

    def _load_plugins(self) -> None:
        """Entry-point plugins: names only (their objects load on first use, tolerantly)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self._group):
            if ep.name in self._builtins:
                self.plugin_errors[ep.name] = f"plugin {ep.value} uses the built-in name {ep.name!r}"
                continue
            self._plugins[ep.name] = ep
            self._origin[ep.name] = f"plugin {ep.value}"

    def _materialise(self, name: str) -> T | None:
        if name in self._items:
            return self._items[name]
        if name in self._builtins:
            target = self._builtins[name][0]
            module, _, attr = target.partition(":")
            obj = getattr(importlib.import_module(module), attr)  # its decorator registers it
            if self._items.get(name) is not obj:
                self.register(name, obj)
            return obj
        if name in self._plugins:
            ep = self._plugins.pop(name)
            try:
                obj = ep.load()
                self.register(name, obj, origin=f"plugin {ep.value}")
                return obj
            except Exception as e:  # tolerant: report, keep going
                self.plugin_errors[name] = f"{type(e).__name__}: {e}"
                log.warning("could not load %s plugin %r (%s): %s", self.kind, name, ep.value, e)
        return None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(set(self._builtins) | set(self._items) | set(self._plugins))

    def describe(self, name: str) -> str:
        """One line about ``name`` without importing a built-in (its registry entry), else the docstring's first line."""
        if name in self._builtins:
            return self._builtins[name][1]
        obj = self._materialise(name)
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        return doc[0] if doc else ""

    def origin(self, name: str) -> str:
        self._load_plugins()
        return self._origin.get(name, "")

    def get(self, name: str) -> T:
        if ":" in name:
            obj = load_object(name)
            err = self._check(obj)
            if err:
                raise UserError(f"{name!r} is not a valid {self.kind}: {err}")
            if isinstance(obj, type) and not obj.__dict__.get("name"):
                obj.name = name.rpartition(":")[2]  # a file plugin without a registration: named by its attribute
            return obj
        self._load_plugins()
        obj = self._materialise(name)
        if obj is not None:
            return obj
        if name in self.plugin_errors:
            raise UserError(f"{self.kind} plugin {name!r} failed to load: {self.plugin_errors[name]}")
        known = self.names()
        folded = {k.lower().replace("-", "_"): k for k in known}
        same = folded.get(name.lower().replace("-", "_"))
        hint = [same] if same else difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if hint:
            msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
        msg += f" (run `lfpo-bench list` for all {self.kind}s, or pass 'path/to/file.py:Name')"
        raise UserError(msg)


def _check_task(obj: Any) -> str | None:
    from .task import Task

    if not (isinstance(obj, Task) or (isinstance(obj, type) and issubclass(obj, Task))):
        return "a task must be a subclass (or an instance) of lfpo_bench.task.Task"
    missing = [m for m in ("load", "prompt", "extract", "score") if not callable(getattr(obj, m, None))]
    return f"a task needs methods {missing}" if missing else None


def _check_method(obj: Any) -> str | None:
    from .method import Method

    if not isinstance(obj, type):
        return "a method must be a class"
    if not issubclass(obj, Method):
        return "a method must subclass lfpo_bench.method.Method (it declares the protocol the trainer reads)"
    if obj.loss is Method.loss:
        return "a method needs a loss(ctx, mb, state, it, m, chunk) method"
    if not is_dataclass(getattr(obj, "Config", None)):
        return "a method needs a nested frozen dataclass `Config`"
    return None


B = "lfpo_bench.baselines"
T_ = "lfpo_bench.tasks"
TASKS: Registry = Registry("task", _check_task, {
    "sudoku4": (f"{T_}.sudoku:Sudoku4", "4x4 Sudoku, synthetic (the tiny model's default task)"),
    "sudoku": (f"{T_}.sudoku:Sudoku", "4x4 Sudoku, SPG/d1's puzzle set (LLaDA)"),
    "countdown": (f"{T_}.countdown:Countdown", "Countdown with 3 numbers, d1's set (LLaDA)"),
    "countdown3-mini": (f"{T_}.countdown:CountdownMini", "Countdown with 3 small numbers, synthetic (tiny model)"),
    "gsm8k": (f"{T_}.gsm8k:GSM8K", "grade-school maths word problems (LLaDA)"),
    "math500": (f"{T_}.math500:MATH500", "MATH500 competition maths, math-verify equivalence (LLaDA)"),
    "humaneval": (f"{T_}.humaneval:HumanEval", "HumanEval code generation, sandboxed tests (LLaDA)"),
    "humaneval_plus": (f"{T_}.humaneval:HumanEvalPlus", "HumanEval+ (evalplus tests)"),
    "mbpp": (f"{T_}.mbpp:MBPP", "MBPP code generation, sandboxed tests (LLaDA)"),
    "mbpp_plus": (f"{T_}.mbpp:MBPPPlus", "MBPP+ (evalplus tests)"),
    "toy-code": (f"{T_}.toy_code:ToyCode", "tiny synthetic code task, sandboxed (tiny model)"),
}, "lfpo_bench.tasks")
METHODS: Registry = Registry("method", _check_method, {
    "lfpo": ("lfpo_bench.lfpo:LFPO", "Likelihood-Free Policy Optimization (contrastive denoising logits, no likelihood)"),
    "diffu_grpo": (f"{B}.diffu_grpo:DiffuGRPO", "diffu-GRPO (d1): GRPO on the one-step likelihood proxy"),
    "wd1": (f"{B}.wd1:WD1", "wd1: weighted likelihood, no ratio clipping"),
    "spg": (f"{B}.spg:SPG", "SPG: sandwiched policy gradient (EUBO/ELBO bounds)"),
    "coupled_grpo": (f"{B}.coupled_grpo:CoupledGRPO", "coupled-GRPO (DiffuCoder): complementary mask pairs"),
    "espo": (f"{B}.espo:ESPO", "ESPO: sequence-level ELBO policy optimisation"),
    "trace_rl": (f"{B}.trace_rl:TraceRL", "TraceRL-style trajectory replay of the decoding order"),
    "d2": (f"{B}.d2:D2", "d2 StepMerge: GRPO on the trajectory likelihood, N decoding steps merged per forward"),
    "map": (f"{B}.map:MAP", "Mask-Aware Policy Gradients: StepMerge token and position policies, GSPO losses"),
    "sft": (f"{B}.sft:SFT", "supervised fine-tuning on reference completions (no rollouts)"),
    "none": (f"{B}.none:NoTraining", "no training: evaluates the starting policy"),
}, "lfpo_bench.methods")
