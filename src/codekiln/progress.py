"""Progress bars and summary tables shared by every stage (rich, on stderr)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn

console = Console(stderr=True)


@contextlib.contextmanager
def _bar(label: str, total: int, columns: tuple, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar with these columns (none when disabled or empty); yields a function that advances it."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    with Progress(*columns, console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def task_progress(label: str, total_bytes: int, enabled: bool = True):
    """A byte-based progress bar; a context manager yielding a function that advances it."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    return _bar(label, total_bytes, columns, enabled)


def count_progress(label: str, total: int, enabled: bool = True):
    """A progress bar over a number of items; a context manager yielding a function that advances it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    return _bar(label, total, columns, enabled)
