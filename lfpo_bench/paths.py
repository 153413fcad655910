"""Where things live on disk: the cache (pretrained tiny models, downloaded data) and results."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LFPO_BENCH_CACHE`` or the user cache directory (e.g. ~/.cache/lfpo-bench)."""
    env = os.environ.get("LFPO_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lfpo-bench"))


def data_dir() -> Path | None:
    """``$LFPO_BENCH_DATA_DIR``: a folder of local dataset files that override the public sources."""
    env = os.environ.get("LFPO_BENCH_DATA_DIR")
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_dir():
        from .types import UserError

        raise UserError(f"LFPO_BENCH_DATA_DIR={env}: no such folder; point it at a folder of benchmark JSONL files or unset it")
    return path
