"""Running independent tasks on worker processes, shared by the stages that fan out (corpus build, shards)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator


def resolve_workers(workers: int | None) -> int:
    """Workers to use: the number given, or every core this process may run on when 0/None."""
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ignore_sigint() -> None:
    """For worker initializers: Ctrl-C is the parent's to handle (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_tasks(fn: Callable, tasks: list, workers: int, initializer: Callable, initargs: tuple) -> Iterator:
    """Results of fn over tasks, in completion order: inline when one worker (or task) suffices, else on a
    forked pool that is terminated on any error or interruption."""
    if workers <= 1 or len(tasks) <= 1:
        initializer(*initargs)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for task in tasks:
            yield fn(task)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(min(workers, len(tasks)), initializer=initializer, initargs=initargs)
    try:
        yield from pool.imap_unordered(fn, tasks, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
