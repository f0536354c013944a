"""Atomic file writes shared by every stage: a reader sees a file whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


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


def atomic_write_json(path, obj) -> None:
    """JSON, indented, with a trailing newline, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    """A Parquet file written atomically (zstd, no timestamps, so reruns give identical bytes)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", row_group_size=8192)
    os.replace(tmp, path)
