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


def _looks_like_rows(path: Path) -> bool:
    """A file we may append to: empty, or its first line is a JSON object (a results or log row)."""
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        return path.stat().st_size == 0 or not first
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def check_output_dir(path: str | Path, flag: str = "--out-dir") -> Path:
    """Before any work: ``path`` is (or can be made) a writable folder."""
    from .types import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create it ({e.strerror}); choose a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: not writable (read-only file system or permissions); choose another folder")
    return path


def rows_text(rows: list[dict[str, Any]]) -> str:
    """Result rows as JSON lines, the one serialisation every rows file uses."""
    return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append complete lines with one ``fsync``. A failed or short write (full disk, quota) restores the file
    to its previous length and raises ``UserError``: a results file is never left with a torn row that a
    reader would silently drop. A file that is not a rows file is never touched."""
    from .types import UserError

    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _looks_like_rows(path):
        raise UserError(f"{path}: exists and is not a results file; refusing to append rows to it")
    repair(path)
    data = rows_text(rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    start = os.fstat(fd).st_size
    try:
        done = 0
        while done < len(data):
            n = os.write(fd, data[done:])
            if n <= 0:
                raise OSError(28, "short write")
            done += n
        os.fsync(fd)
    except OSError as e:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise UserError(f"{path}: writing {len(rows)} row(s) failed ({e.strerror or e}); the file was left as it was. "
                        "Free space or choose another --out, then rerun (finished runs resume)") from None
    finally:
        os.close(fd)


def repair(path: str | Path) -> int:
    """Truncate a torn (unterminated or unparsable) last line; returns the bytes removed."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0 or not _looks_like_rows(path):
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
