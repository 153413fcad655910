"""Name -> object registries for tasks and methods, in the manner of lm-eval's ``api/registry.py``.

- Built-ins register themselves with a decorator when their module (one per file in ``tasks/`` and
  ``baselines/``) is imported; ``Registry.names()`` imports those modules, which do no work at import.
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
import pkgutil
import sys
from collections.abc import Callable
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
    def __init__(self, kind: str, check: Callable[[Any], str | None], builtins: list[str], group: str):
        self.kind = kind
        self._check = check  # returns an error message, or None when the object is acceptable
        self._builtins = builtins  # modules to import; for a package, each of its submodules
        self._group = group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False
        self.plugin_errors: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, origin: str = "builtin"):
        def deco(o: T) -> T:
            err = self._check(o)
            if err:
                raise TypeError(f"cannot register {self.kind} {name!r}: {err}")
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._origin[name]})")
            self._items[name] = o
            self._origin[name] = origin
            return o

        return deco(obj) if obj is not None else deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod_name in self._builtins:
            mod = importlib.import_module(mod_name)
            for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{mod_name}.{info.name}")
        for ep in entry_points(group=self._group):
            try:
                obj = ep.load()
                self.register(ep.name, obj, origin=f"plugin {ep.value}")
            except Exception as e:  # tolerant: report, keep going
                self.plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
                log.warning("could not load %s plugin %r (%s): %s", self.kind, ep.name, ep.value, e)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def origin(self, name: str) -> str:
        self._load()
        return self._origin.get(name, "")

    def get(self, name: str) -> T:
        if ":" in name:
            obj = load_object(name)
            err = self._check(obj)
            if err:
                raise UserError(f"{name!r} is not a valid {self.kind}: {err}")
            return obj
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self.plugin_errors:
            raise UserError(f"{self.kind} plugin {name!r} failed to load: {self.plugin_errors[name]}")
        folded = {k.lower().replace("-", "_"): k for k in self._items}
        same = folded.get(name.lower().replace("-", "_"))
        hint = [same] if same else difflib.get_close_matches(name.lower(), list(self._items), n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if hint:
            msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
        msg += f" (run `lfpo-bench list` for all {self.kind}s, or pass 'path/to/file.py:Name')"
        raise UserError(msg)


def _check_task(obj: Any) -> str | None:
    missing = [m for m in ("load", "prompt", "extract", "score") if not callable(getattr(obj, m, None))]
    return f"a task needs methods {missing}" if missing else None


def _check_method(obj: Any) -> str | None:
    if not isinstance(obj, type):
        return "a method must be a class"
    missing = [m for m in ("loss",) if not callable(getattr(obj, m, None))]
    if missing:
        return f"a method needs {missing}"
    if not hasattr(obj, "Config"):
        return "a method needs a nested frozen dataclass `Config`"
    return None


TASKS: Registry = Registry("task", _check_task, ["lfpo_bench.tasks"], "lfpo_bench.tasks")
METHODS: Registry = Registry("method", _check_method, ["lfpo_bench.lfpo", "lfpo_bench.baselines"], "lfpo_bench.methods")
