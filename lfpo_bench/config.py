"""Configs are frozen dataclasses; files and ``--set key=value`` only override their fields.

Keys are checked: an unknown key is an error with a "did you mean". ``--set`` values are parsed as YAML
scalars (``beta=0.5``, ``mix=prob``, ``val_limit=null``). Keys may be qualified (``method.beta``,
``train.lr``) or bare when exactly one of the configs has that field.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .types import UserError

BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def nested_fields(cls) -> dict[str, type]:
    """Fields of ``cls`` that are configs themselves (``TrainConfig.rollout``): name -> their class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints.get(f.name))}


def field_names(cls) -> list[str]:
    """The keys of ``cls``: its fields, a nested config's as ``name.field`` (``rollout.steps``)."""
    nested = nested_fields(cls)
    out = []
    for f in fields(cls):
        out += [f"{f.name}.{n}" for n in field_names(nested[f.name])] if f.name in nested else [f.name]
    return out


def flatten(cls, values: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
    """``values`` with a nested config's mapping (``rollout: {steps: 4}``) or instance spelled as dotted keys
    (``rollout.steps: 4``), the one form every merge, grid and hash works on."""
    out: dict[str, Any] = {}
    nested = nested_fields(cls)
    for k, v in (values or {}).items():
        if k in nested and is_dataclass(v) and not isinstance(v, type):
            v = asdict(v)
        if k in nested:
            if not isinstance(v, dict):
                raise UserError(f"{where}{k}: expected a mapping of {k} fields such as {{{field_names(nested[k])[0]}: ...}}, "
                                f"got {v!r}; or write {where}{k}.FIELD=VALUE")
            out.update({f"{k}.{kk}": vv for kk, vv in flatten(nested[k], v, f"{where}{k}.").items()})
        else:
            out[k] = v
    return out


def _coerce(cls, name: str, value: Any, where: str) -> Any:
    if "." in name and name.split(".", 1)[0] in nested_fields(cls):
        head, rest = name.split(".", 1)
        return _coerce(nested_fields(cls)[head], rest, value, f"{where}{head}.")
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
        if t is bool or t == (bool | None):
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in BOOL_WORDS:
                return BOOL_WORDS[value.lower()]
            raise ValueError
        if t is str or t == (str | None):
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if t in (tuple[int, ...], tuple[float, ...]):
            items = value if isinstance(value, (list, tuple)) else [value]
            conv = int if t == tuple[int, ...] else float
            if conv is int and any(isinstance(x, float) and not x.is_integer() for x in items):
                raise ValueError
            return tuple(conv(x) for x in items)
    except (TypeError, ValueError):
        raise UserError(f"{where}{name}: expected {_type_name(t)}, got {value!r}") from None
    return value


def _type_name(t) -> str:
    if t is bool or t == (bool | None):
        return "true or false"
    return str(getattr(t, "__name__", t)).replace("typing.", "")


# Ranges of the knobs that methods share by name (built-ins and plugins alike), checked wherever a value
# comes from (defaults, config files, --set, sweep cells): a count below 1 would train nothing, a negative
# weight would reverse a term, a probability outside [0, 1] means nothing.
AT_LEAST_ONE = {"mu", "k", "n_draws", "n_masks", "shrink", "block"}
POSITIVE = {"beta", "beta_eubo", "a_max"}
NON_NEGATIVE = {"kl_beta", "eps", "lambda_cons"}
FRACTION = {"p_mask_prompt", "p_other", "acc_low", "acc_high", "t_min", "t_low", "t_high", "mixture", "ema"}


def check_ranges(cfg, where: str = "") -> None:
    """``UserError`` naming the field when a shared knob of ``cfg`` (a dataclass) is out of its range."""
    import dataclasses

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        bad = None
        if f.name in AT_LEAST_ONE and v < 1:
            bad = "must be >= 1 (0 would do nothing)"
        elif f.name in POSITIVE and not v > 0:
            bad = "must be > 0"
        elif f.name in NON_NEGATIVE and not v >= 0:
            bad = "must be >= 0 (0 turns the term off)"
        elif f.name in FRACTION and not 0 <= v <= 1:
            bad = "is a probability or fraction: it must be in [0, 1]"
        if bad:
            raise UserError(f"{where}{f.name} = {v}: {bad}")


def build(cls, values: dict[str, Any], where: str = ""):
    """``cls(**values)`` with unknown keys reported and scalar types coerced."""
    values = flatten(cls, values, where)
    check_keys(cls, values, where)
    coerced = {k: _coerce(cls, k, v, where) for k, v in values.items()}
    for k, v in coerced.items():  # every temperature (rollout, sampling) is a non-negative number
        if "temperature" in k and isinstance(v, (int, float)) and not v >= 0:
            raise UserError(f"{where}{k} = {v}: a temperature must be >= 0 (0 = greedy)")
    top = {k: v for k, v in coerced.items() if "." not in k}
    for name, sub in nested_fields(cls).items():
        part = {k.split(".", 1)[1]: v for k, v in coerced.items() if k.startswith(name + ".")}
        top[name] = build(sub, part, f"{where}{name}.")
    try:
        out = cls(**top)
    except ValueError as e:
        raise UserError(f"invalid {where.rstrip('.') or 'config'}: {e}") from None
    check_ranges(out, where)
    return out


def check_keys(cls, values: dict[str, Any], where: str = "") -> None:
    """``UserError`` for the first key of ``values`` (flattened) that ``cls`` does not have, with a "did you mean";
    a key that moved into a nested config (``rollout_steps`` -> ``rollout.steps``) is named as such."""
    names = field_names(cls)
    for k in values:
        if k in names:
            continue
        moved = [n for n in names if n.replace(".", "_", 1) == k]
        if moved:
            raise UserError(f"config key '{where}{k}' is now '{where}{moved[0]}' (the {moved[0].split('.')[0]} settings are "
                            f"one nested config); write {where}{moved[0]}=... or {moved[0].split('.')[0]}: {{"
                            f"{moved[0].split('.', 1)[1]}: ...}} in a file")
        hint = difflib.get_close_matches(k, names, n=2)
        raise UserError(f"unknown config key '{where}{k}'" + (f"; did you mean {', '.join(hint)}?" if hint else "")
                        + f" (valid: {', '.join(names)})")


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
            nesting = [s for s, cls in sections.items() if is_dataclass(cls) and sec in nested_fields(cls)]
            if sec not in sections and len(nesting) == 1:
                sec, key = nesting[0], k  # rollout.steps -> train.rollout.steps
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


def merge_layers(cls, layers: list[tuple[str, dict[str, Any], bool]], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the values of one config section from several sources, in order. ``layers``: (source, values,
    is_default). A default (a model profile's, a method's per-task default) is overridden by any later source, as
    documented; two sources the user gave (a flag, ``--set``, the config file, a sweep section) must agree: the same
    key with different values is an error naming both. Returns (values, source of each value)."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    default_of: dict[str, bool] = {}
    for source, layer, is_default in layers:
        layer = flatten(cls, layer, where)
        check_keys(cls, layer, where)  # unknown keys: the error with "did you mean"
        coerced = {k: _coerce(cls, k, v, where) for k, v in (layer or {}).items()}
        for k, v in coerced.items():
            if k in values and not default_of[k] and not is_default and values[k] != v:
                raise UserError(f"{where}{k} is given twice with different values: {values[k]!r} by {origin[k]} and {v!r} by "
                                f"{source}; keep one of them")
            if k in values and not default_of[k] and (is_default or values[k] == v):
                continue  # a default never overrides what the user gave; the same value again keeps its first source
            values[k], origin[k], default_of[k] = v, source, is_default
    return values, origin


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()) or device == "mps":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but CUDA is not available here; use --device cpu")
        return device
    raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")


def make_task(name: str, data: str | None = None):
    from .registry import TASKS

    cls = TASKS.get(name)
    return cls(data_path=data) if isinstance(cls, type) else cls
