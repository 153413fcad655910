"""A thin rich progress bar with a free-form status field (loss, reward, samples/s), silent when disabled
or when stderr is not a terminal and ``LFPO_BENCH_PROGRESS=0``."""

from __future__ import annotations

import os
from contextlib import contextmanager


class _Bar:
    def __init__(self, progress, task_id):
        self._p = progress
        self._id = task_id

    def advance(self, n: int = 1, **status) -> None:
        if self._p is None:
            return
        text = "  ".join(f"{k}={v}" for k, v in status.items())
        self._p.update(self._id, advance=n, status=text) if status else self._p.update(self._id, advance=n)

    def total(self, total: int) -> None:
        if self._p is not None:
            self._p.update(self._id, total=total)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True):
    if not enabled or os.environ.get("LFPO_BENCH_PROGRESS", "1") == "0":
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        tid = progress.add_task(description, total=total, status="")
        yield _Bar(progress, tid)
