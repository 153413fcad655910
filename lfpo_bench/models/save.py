"""Saving a model (torch and transformers only, no loader): used by the loader, pretraining and runs."""

from __future__ import annotations

from pathlib import Path

from .base import DiffusionLM


def quiet_transformers() -> None:
    """transformers' own weight-loading/saving bars would interleave with ours (called when a model is loaded
    or saved, not at import time)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def save_model(lm: DiffusionLM, path: str | Path, state_dict: dict | None = None) -> Path:
    """Save so that ``AutoModel.from_pretrained(path, trust_remote_code=True)`` works in a fresh process.
    ``state_dict``: the full weights when the module's own parameters are shards (FSDP)."""
    quiet_transformers()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    module = lm.module
    if lm.profile.name == "tiny":
        module.config.register_for_auto_class()
        module.register_for_auto_class("AutoModel")
    if state_dict is None:
        module.save_pretrained(path)
    else:
        module.save_pretrained(path, state_dict=state_dict)
    lm.tokenizer.save_pretrained(path)
    return path
