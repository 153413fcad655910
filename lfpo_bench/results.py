"""Results files: JSONL rows appended atomically, read back tolerating a torn last line.

Each row is written with one ``write`` of a complete line followed by ``fsync``; a process killed mid-write
can therefore leave at most one partial line at the end of the file. ``read_rows`` drops such a line (and
``repair`` truncates it away) so that a resumed sweep appends onto a clean file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair(path)
    data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: str | Path) -> int:
    """Truncate a torn (unterminated or unparsable) last line; returns the bytes removed."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb") as f:
        data = f.read()
    keep = len(data)
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except json.JSONDecodeError:
            keep = last_start
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        log.warning("%s: dropped a torn last line (%d bytes)", path, len(data) - keep)
    return len(data) - keep


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows; a torn last line is skipped with a warning, a corrupt inner line is an error."""
    from .types import UserError

    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n >= len(lines) - 1:
                log.warning("%s:%d: skipping a torn last line", path, n)
                continue
            raise UserError(f"{path}:{n}: corrupt results line (not JSON); remove it or restore the file") from None
    return out
