"""One output-path policy for every command that writes, one lock per writer, and the Ctrl-C line.

**What may be written.** A command writes into a *new* file or folder, or into one this project wrote for
the same kind of result. Folders are recognised by a marker file (``MARKER``) that the project writes
when it creates them: a run, a sweep, a tune, plots. A file is recognised by its schema: result rows
(``ResultRow``'s keys), a gradcheck result, a table this project printed. Anything else is refused before
any work, with a message naming the fix; nothing the project did not create is ever deleted, rewritten or
appended to. Folders written by earlier versions (before the marker) are recognised by their contents
(a run's ``config.json``, a sweep's ``cells.jsonl``) and adopted.

**Destinations are checked before the work**: a file in the way of a folder ("a path under a file"), a
folder where a file should go, a destination that cannot be created or written.

**Locks.** ``Lock(folder)`` holds an exclusive ``flock`` on ``folder/.lock`` for the life of a run, sweep or
tune; a second writer gets an error naming the holder's pid. The kernel drops the lock when its process
dies, so a killed run leaves no stale lock.

**Interrupts.** ``on_interrupt(text)`` records what Ctrl-C would leave behind and the command that resumes;
``cli.main`` prints it as one line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .types import UserError

MARKER = ".lfpo-bench.json"
ROW_KEYS = {"method", "task", "split", "config_hash"}
GRADCHECK_KEYS = {"config", "split_half_cos", "rows"}
TABLE_HEAD = re.compile(r"^[\w.]+ \(%\), mean ± 95% CI")  # the first line `lfpo-bench table` writes


def _way_is_clear(path: Path, flag: str) -> None:
    """No file where a folder must be (``path``'s parents)."""
    for p in path.parents:
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{flag} {path}: {p} is a file, not a folder; choose another path")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"{flag} {path}: {p} is not writable; choose a writable path")
            return


def _legacy_kind(path: Path) -> str | None:
    """The kind of a folder an earlier version wrote (before markers), from its contents."""
    try:
        cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    except (OSError, ValueError):
        cfg = None
    if isinstance(cfg, dict) and {"method", "task", "git_sha"} <= set(cfg):
        return "run"
    cells = path / "cells.jsonl"
    if cells.is_file() and (path / "sweep.yaml").is_file():
        try:
            first = json.loads(cells.open().readline() or "{}")
        except ValueError:
            first = None
        if isinstance(first, dict) and {"cell", "status"} <= set(first):
            return "sweep"
    if (path / "tune.yaml").is_file() and (path / "tune").is_dir():
        return "tune"
    entries = list(path.iterdir())
    if entries and all(p.is_file() and p.suffix in (".png", ".svg") for p in entries):
        return "plots"
    return None


def read_marker(path: Path) -> dict | None:
    m = Path(path) / MARKER
    if not m.is_file():
        return None
    try:
        info = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def claim_folder(path: str | Path, kind: str, flag: str = "--out", name: str | None = None) -> Path:
    """Before any work: the folder for a result of ``kind`` ("run", "sweep", "tune", "plots"), created with
    its marker, or an existing one this project wrote for that kind (and, with ``name``, that sweep or tune
    name). Refuses anything else with ``UserError``."""
    path = Path(path)
    _way_is_clear(path, flag)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag} {path}: is a file; give a folder (a new one, or one lfpo-bench wrote)")
        info = read_marker(path)
        if info is None:
            legacy = _legacy_kind(path)
            if legacy is None and any(path.iterdir()):
                raise UserError(f"{flag} {path}: exists and holds files lfpo-bench did not write there; nothing in it is "
                                "touched. Give a new or empty folder")
            info = {"kind": legacy or kind}
        if info.get("kind") != kind:
            raise UserError(f"{flag} {path}: holds an lfpo-bench {info.get('kind')}, not a {kind}; give another folder")
        if name is not None and info.get("name") not in (None, name):
            raise UserError(f"{flag} {path}: holds the {kind} {info.get('name')!r}, not {name!r}; rerun that one there, or "
                            "give this one its own folder")
        if read_marker(path) is None:  # an empty folder, or one an earlier version wrote: adopt it
            _write_marker(path, kind, name, flag)
        return path
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create it ({e.strerror}); choose a writable path") from None
    _write_marker(path, kind, name, flag)
    return path


def _write_marker(path: Path, kind: str, name: str | None, flag: str) -> None:
    info = {"kind": kind, "name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        (path / MARKER).write_text(json.dumps(info) + "\n")
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write there ({e.strerror}); choose a writable path") from None


def _first_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return None


def is_rows_file(path: Path) -> bool:
    """Empty, or its first line is a result row (``ResultRow``'s keys): never someone's data or config."""
    if path.stat().st_size == 0:
        return True
    first = _first_json(path)
    return isinstance(first, dict) and ROW_KEYS <= set(first)


def _is_kind(path: Path, kind: str) -> bool:
    if kind == "rows":
        return is_rows_file(path)
    if kind == "gradcheck":
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return False
        return isinstance(d, dict) and GRADCHECK_KEYS <= set(d)
    if kind == "table":
        try:
            with open(path, encoding="utf-8") as f:
                return bool(TABLE_HEAD.match(f.readline()))
        except (OSError, UnicodeDecodeError):
            return False
    if kind == "lm-eval":  # lm-eval's results: task -> metrics
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return False
        return isinstance(d, dict) and bool(d) and all(isinstance(v, dict) for v in d.values())
    raise ValueError(kind)


def check_file(path: str | Path, kind: str, flag: str = "--out", example: str = "out.txt") -> Path:
    """Before any work: ``path`` may receive a ``kind`` file ("rows", "gradcheck", "table", "lm-eval"): new,
    or one this project wrote for that kind. Its folder is created (and checked writable) now."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name such as {path / example}")
    _way_is_clear(path, flag)
    if path.exists():
        if not _is_kind(path, kind):
            what = {"rows": "a results file (its first line is not a result row)", "gradcheck": "a gradcheck result",
                    "table": "a table written by lfpo-bench table", "lm-eval": "an lm-eval results file"}[kind]
            raise UserError(f"{flag} {path}: exists and is not {what}; it is left as it is. Give a new file name")
        if not os.access(path, os.W_OK):
            raise UserError(f"{flag} {path}: is not writable; choose a writable path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create {path.parent} ({e.strerror}); choose a writable path") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {path.parent} is not writable; choose a writable path")
    return path


def write_atomic(path: str | Path, text: str | bytes, flag: str = "--out") -> None:
    """Replace ``path`` with ``text`` (or bytes) in one step: a failed write leaves the old file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(text) if isinstance(text, bytes) else tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{flag} {path}: cannot write ({e.strerror}); choose a writable path") from None


class Lock:
    """An exclusive lock on a result folder for one writer (see the module docstring)."""

    def __init__(self, folder: str | Path, what: str):
        self.path = Path(folder) / ".lock"
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> Lock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise UserError(f"{self.path.parent} is in use by another {self.what} (pid {holder}); wait for it to finish, "
                            "or write to another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None

    @staticmethod
    def held(folder: str | Path) -> bool:
        """Does a live process hold ``folder``'s lock now? (A dead holder's flock is gone with it.)"""
        import fcntl

        path = Path(folder) / ".lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken just now
        return False


_INTERRUPT: list[str] = []


def on_interrupt(text: str) -> None:
    """What Ctrl-C now leaves behind, and how to resume (the latest call wins)."""
    _INTERRUPT[:] = [text]


def interrupt_message() -> str:
    return "interrupted: " + (_INTERRUPT[0] if _INTERRUPT else "nothing was written")


def rerun_command(extra: str = "") -> str:
    """The command line that was run, for "resume with" hints; ``extra`` is appended when not already there."""
    args = ["lfpo-bench", *sys.argv[1:]]
    cmd = " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'" for a in args)
    return cmd if not extra or extra in args else f"{cmd} {extra}"
