"""The local executor: runs the map tasks of a build on a pool of worker processes.

Each task reads its documents, runs stages 1-6 and writes its own files under _work/tasks:
`.kept.parquet`, `.removed.parquet` (with --keep-removed), `.stats.json`, then `.done` last.
A task with a `.done` marker is never run again, so a killed build resumes where it stopped.
The results do not depend on how many workers ran or in which order tasks finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from codekiln.config import DataConfig
from codekiln.data.document import REMOVED_SCHEMA
from codekiln.data.faults import SourceUnavailable
from codekiln.data.readers import read_task
from codekiln.data.stages import DocumentProcessor, Stats
from codekiln.data.steps import work_schema
from codekiln.files import atomic_write_bytes, atomic_write_parquet
from codekiln.progress import task_progress
from codekiln.workers import ignore_sigint, run_tasks

_STATE: dict = {}


def task_cost(task: dict) -> int:
    """Expected work of a task, in bytes of text to process (for ordering and the progress bar)."""
    return task.get("cost", task.get("bytes", 0))


def _init_worker(cfg_json: str, keep_removed: bool, work: str, bands: int) -> None:
    ignore_sigint()  # unfinished tasks leave no marker
    cfg = DataConfig.model_validate_json(cfg_json)
    _STATE.update(processor=DocumentProcessor(cfg, keep_removed), work=Path(work), bands=bands,
                  keep_removed=keep_removed, cfg=cfg)


def run_task(task: dict) -> tuple[int, int, str | None]:
    """Run one map task in this worker; returns (task id, its expected cost, why it failed or None).

    A task whose source stays unavailable after the readers' retries leaves no `.done` marker and
    reports why, so the other tasks finish and a rerun retries this one.
    """
    try:
        _run_task(task)
    except SourceUnavailable as exc:
        return task["id"], task_cost(task), str(exc)
    return task["id"], task_cost(task), None


def _run_task(task: dict) -> None:
    proc: DocumentProcessor = _STATE["processor"]
    work: Path = _STATE["work"]
    bands: int = _STATE["bands"]
    proc.stats = Stats()
    max_bytes = proc.cfg.hygiene.max_bytes if proc.cfg.hygiene.enabled else None
    kept, removed = [], []
    zeros = np.zeros(bands, dtype=np.uint64)
    for seq, outcome in enumerate(proc.run(read_task(task, max_bytes))):
        if outcome.reason is None:
            rec, extra = outcome.record, outcome.extra
            rec["order"] = (task["id"] << 32) | seq
            rec["content_hash"] = extra["content_hash"]
            rec["eligible"] = extra["bands"] is not None
            rec["bands"] = zeros if extra["bands"] is None else extra["bands"]
            rec["contaminated"] = extra["contaminated"]
            rec["permissive"] = extra["permissive"]
            kept.append(rec)
        elif _STATE["keep_removed"]:
            rec = outcome.record
            rec["reason"] = outcome.reason
            removed.append(rec)
    base = work / "tasks" / f"task-{task['id']:06d}"
    schema = work_schema(bands)
    cols = {name: [r[name] for r in kept] for name in schema.names if name != "bands"}
    arrays = [pa.array(cols[name], schema.field(name).type) if name != "bands" else
              pa.FixedSizeListArray.from_arrays(
                  pa.array(np.concatenate([r["bands"] for r in kept]) if kept else np.zeros(0, np.uint64),
                           pa.uint64()), bands)
              for name in schema.names]
    atomic_write_parquet(Path(f"{base}.kept.parquet"), pa.Table.from_arrays(arrays, schema=schema))
    if removed:
        atomic_write_parquet(Path(f"{base}.removed.parquet"), pa.Table.from_pylist(removed, schema=REMOVED_SCHEMA))
    atomic_write_bytes(Path(f"{base}.stats.json"), json.dumps(proc.stats.to_dict()).encode())
    atomic_write_bytes(Path(f"{base}.done"), b"")


class LocalExecutor:
    """Runs every unfinished map task, on `workers` processes (inline when 1)."""

    def __init__(self, cfg: DataConfig, keep_removed: bool, work: Path, bands: int, workers: int, progress: bool):
        self.cfg, self.keep_removed, self.work, self.bands = cfg, keep_removed, work, bands
        self.workers, self.progress = workers, progress

    def run(self, tasks: list[dict]) -> int:
        """Run the pending tasks; returns how many were already done (resumed)."""
        done = {t["id"] for t in tasks if (self.work / "tasks" / f"task-{t['id']:06d}.done").exists()}
        pending = [t for t in tasks if t["id"] not in done]
        # Largest first, so the last task to finish is a small one and no core idles long.
        pending.sort(key=lambda t: (-task_cost(t), t["id"]))
        total = sum(task_cost(t) for t in pending)
        initargs = (self.cfg.model_dump_json(), self.keep_removed, str(self.work), self.bands)
        failed: list[str] = []
        with task_progress("map: stages 1-6", total, enabled=self.progress) as advance:
            for _tid, cost, error in run_tasks(run_task, pending, self.workers, _init_worker, initargs):
                advance(cost)
                if error is not None:
                    failed.append(error)
        if failed:
            raise SourceUnavailable(unfinished_message(len(failed), len(tasks), failed[0]))
        return len(done)


def unfinished_message(failed: int, tasks: int, first: str) -> str:
    """The one line a build ends with when map tasks could not read their sources."""
    return (f"{failed} of {tasks} map tasks stopped unfinished ({first}); "
            "the finished tasks are kept: run the same command again to retry the rest")
