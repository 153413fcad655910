"""``load_model(spec)``: one entry point for every model the harness runs.

Specs:

- ``tiny``: the built-in tiny model pretrained on the task's synthetic task (trained on first use, cached);
- ``tiny:<task>``: pretrained on that synthetic task; ``tiny:<task>@<steps>``: the same pretraining with
  ``steps`` optimiser steps instead of the default (fewer: a weaker start; cached like the default); ``tiny-random``: untrained, for tests and benchmarks;
- ``tiny-llada``: a tiny random checkpoint in the official LLaDA layout (exercises the real-model path);
- a local folder: a saved tiny checkpoint, a native LLaDA checkpoint, or any HF checkpoint of a known family;
- a hub id (``GSAI-ML/LLaDA-8B-Instruct``, ``Dream-org/Dream-v0-Instruct-7B``, ``apple/DiffuCoder-7B-cpGRPO``):
  loaded from the local HF cache; offline with no cached copy, the error says how to get one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..types import UserError
from .base import DiffusionLM
from .save import quiet_transformers, save_model
from .tiny.build import _load_tiny_dir, new_tiny, tiny_profile

__all__ = ["load_model", "new_tiny", "save_model", "tiny_profile"]

log = logging.getLogger(__name__)


def _damaged_file(path: Path) -> str | None:
    """The first JSON or safetensors file of a checkpoint folder that does not parse, if any."""
    for f in sorted(path.glob("*.json")):
        try:
            json.loads(f.read_text())
        except (ValueError, OSError):
            return str(f)
    for f in sorted(path.glob("*.safetensors")):
        try:
            from safetensors import safe_open

            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    h.get_slice(k)
        except Exception:  # noqa: BLE001 - any failure to open means damaged
            return str(f)
    return None


def _load_dir(path: Path, *, task, device, dtype, quiet, load_in_4bit) -> DiffusionLM:
    cfg_file = path / "config.json"
    if not cfg_file.exists() and not (path / "adapter_config.json").exists():
        raise UserError(f"{str(path)!r} is a folder but holds no config.json; point --model at a saved checkpoint")
    from .adapters import is_adapter_dir, load_adapter

    if is_adapter_dir(path):  # a LoRA run's checkpoint: base model + adapters
        return load_adapter(path, device, dtype, lambda base: load_model(base, task=task, device=device, dtype=dtype, quiet=quiet))
    model_type = json.loads(cfg_file.read_text()).get("model_type", "")
    if model_type == "lfpo_tiny_dlm":
        return _load_tiny_dir(path, device, dtype)
    from .hf import load_hf

    return load_hf(str(path), model_type=model_type, device=device, dtype=dtype, load_in_4bit=load_in_4bit)


def load_model(spec: str, *, task=None, device: str | torch.device = "cpu", dtype=None, quiet: bool = False,
               load_in_4bit: bool = False) -> DiffusionLM:
    """Resolve ``spec`` (see module docstring) to a ``DiffusionLM`` on ``device`` (``load_in_4bit``: QLoRA-style
    NF4 weights for real models, CUDA only)."""
    quiet_transformers()
    if spec == "tiny-llada":
        from ..paths import cache_dir
        from .llada.tiny import make_tiny_llada

        path = cache_dir() / "models" / "tiny-llada-v1"
        if not (path / "config.json").exists():
            make_tiny_llada(path)
        from .hf import load_hf

        lm = load_hf(str(path), model_type="llada", device=device, dtype=dtype)
        lm.name = "tiny-llada"
        return lm
    if spec == "tiny-random":
        lm = new_tiny(0)
        lm.module.to(device).eval()
        return lm
    if spec == "tiny" or spec.startswith("tiny:"):
        from ..pretrain import (
            ensure_tiny,  # pretrains a missing checkpoint (pretrain never imports the loader)
        )

        pre = spec.split(":", 1)[1] if ":" in spec else (getattr(task, "tiny_pretrain", None) or "sudoku4")
        pre, at, steps = pre.partition("@")  # tiny:<task>@<steps>: pretrained for that many steps instead
        if at and not steps.isdigit():
            raise UserError(f"model {spec!r}: after '@' give the pretraining steps as a whole number, e.g. tiny:{pre}@200")
        path = ensure_tiny(pre, quiet=quiet, steps=int(steps) if at else None)
        lm = _load_tiny_dir(path, device, dtype)
        lm.name = f"tiny:{pre}" + (f"@{steps}" if at else "")
        return lm
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            return _load_dir(path, task=task, device=device, dtype=dtype, quiet=quiet, load_in_4bit=load_in_4bit)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated JSON, half a safetensors file (SafetensorError), ...
            bad = _damaged_file(path)
            raise UserError(f"--model {path}: cannot load the checkpoint ({type(e).__name__}: {str(e)[:200]})"
                            + (f"; {bad} looks damaged" if bad else "") + ". Re-save or re-download it") from None
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".pt", ".bin", ".safetensors"))
    if looks_like_path:
        raise UserError(f"model path {spec!r} does not exist; give a checkpoint folder, a hub id, or 'tiny'")
    if "/" not in spec:
        raise UserError(
            f"unknown model {spec!r}; use 'tiny', 'tiny:<synthetic task>', 'tiny-random', a checkpoint folder, "
            f"or a hub id such as GSAI-ML/LLaDA-8B-Instruct"
        )
    from .hf import load_hf

    return load_hf(spec, model_type=None, device=device, dtype=dtype, load_in_4bit=load_in_4bit)
