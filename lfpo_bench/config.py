"""Configs are frozen dataclasses; files and ``--set key=value`` only override their fields.

Keys are checked: an unknown key is an error with a "did you mean". ``--set`` values are parsed as YAML
scalars (``beta=0.5``, ``mix=prob``, ``val_limit=null``). Keys may be qualified (``method.beta``,
``train.lr``) or bare when exactly one of the configs has that field.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .types import UserError


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def _coerce(cls, name: str, value: Any, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    t = hints.get(name)
    if value is None:
        return None
    try:
        if t is float or t == (float | None):
            return float(value)
        if t is int or t == (int | None):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if t is str:
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}{name}: expected {getattr(t, '__name__', t)}, got {value!r}") from None
    return value


def build(cls, values: dict[str, Any], where: str = ""):
    """``cls(**values)`` with unknown keys reported and scalar types coerced."""
    names = field_names(cls)
    unknown = [k for k in values if k not in names]
    if unknown:
        k = unknown[0]
        hint = difflib.get_close_matches(k, names, n=2)
        raise UserError(f"unknown config key {where}{k!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")
                        + f" (valid: {', '.join(names)})")
    coerced = {k: _coerce(cls, k, v, where) for k, v in values.items()}
    for k, v in coerced.items():  # every temperature (rollout, sampling) is a non-negative number
        if "temperature" in k and isinstance(v, (int, float)) and not v >= 0:
            raise UserError(f"{where}{k} = {v}: a temperature must be >= 0 (0 = greedy)")
    try:
        return cls(**coerced)
    except ValueError as e:
        raise UserError(f"invalid {where.rstrip('.') or 'config'}: {e}") from None


def parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise UserError(f"--set takes key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level")
    return data


def split_overrides(flat: dict[str, Any], sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """Route ``section.key`` and bare keys to their section; bare keys must match exactly one section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in sections}
    for k, v in flat.items():
        if "." in k:
            sec, key = k.split(".", 1)
            if sec not in sections:
                hint = difflib.get_close_matches(sec, list(sections), n=1)
                raise UserError(f"unknown config section {sec!r} in {k!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                                + f" (sections: {', '.join(sections)})")
            out[sec][key] = v
            continue
        owners = [s for s, cls in sections.items() if is_dataclass(cls) and k in field_names(cls)]
        if len(owners) == 1:
            out[owners[0]][k] = v
        elif len(owners) > 1:
            raise UserError(f"config key {k!r} is ambiguous (in {', '.join(owners)}); write e.g. {owners[0]}.{k}")
        else:
            allk = [f"{s}.{n}" for s, cls in sections.items() for n in field_names(cls)]
            hint = difflib.get_close_matches(k, [a.split(".", 1)[1] for a in allk], n=2)
            raise UserError(f"unknown config key {k!r}" + (f"; did you mean {', '.join(hint)}?" if hint else ""))
    return out
