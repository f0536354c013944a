"""Atomic file writes shared by every stage: a reader sees a file whole or not at all, even after a crash.

A local write goes to a temporary name, is fsynced, renamed over the target, and then the directory is
fsynced, so the rename itself is on disk before anything written later (a checkpoint's `latest`)
can refer to it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to disk; a no-op where the filesystem cannot."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (and platforms) refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write a file through a temporary name and a rename (an object store's single PUT for non-local paths)."""
    if not isinstance(path, Path):
        path.write_bytes(data)  # e.g. codekiln.data.uri.UriPath: the object appears whole or not at all
        return
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path, obj) -> None:
    """JSON, indented, with a trailing newline, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    """A Parquet file written atomically (zstd, no timestamps, so reruns give identical bytes)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", row_group_size=8192)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished directory into place at out: an earlier one there is swapped out, then deleted."""
    fsync_dir(tmp)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
