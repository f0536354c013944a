"""Progress bars and summary tables shared by every stage (rich, on stderr)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn

console = Console(stderr=True)


@contextlib.contextmanager
def task_progress(label: str, total_bytes: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A byte-based progress bar; yields a function that advances it."""
    if not enabled or total_bytes <= 0:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=total_bytes)
        yield lambda n: progress.advance(task, n)


@contextlib.contextmanager
def count_progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar over a number of items; yields a function that advances it."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.progress import MofNCompleteColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
