"""Near-dedup clustering at scale: time and peak memory of the corpus-wide dedup pass for N documents.

The pass holds per document only its id, content hash and LSH band keys (25 x 8 bytes at the
default threshold), never shingles. This writes N synthetic documents' keys (with planted duplicate
clusters) as map-task Parquet files, exactly as a build leaves them, then measures in a fresh process
the build's own loading (`load_dedup_keys`) and clustering (`deduplicate`). Baseline, in the same run:
a pure-Python union-find over the same LSH buckets (the classic approach) on the first
`--baseline-docs` documents, checked to give identical clusters.

    python benchmarks/dedup_memory.py [--docs 1000000] [--bands 25]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from codekiln.data.build import load_dedup_keys, work_schema
from codekiln.data.dedup import connected_components, deduplicate
from codekiln.files import atomic_write_parquet

ROWS_PER_TASK = 20_000


def synthetic(n: int, bands: int, seed: int = 0):
    """Keys where ~10% of documents are near copies (sharing some bands) of another one."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=(n, bands), dtype=np.uint64)
    dup = rng.choice(n, size=n // 10, replace=False)
    src = rng.integers(0, n, size=dup.size)
    shared = rng.random((dup.size, bands)) < 0.3
    keys[dup] = np.where(shared, keys[src], keys[dup])
    ids = np.array([f"{i:032x}" for i in rng.permutation(n)], dtype="U32")
    chash = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64).view("S16").ravel()
    return ids, chash, keys


def python_union_find(keys: np.ndarray) -> list[int]:
    """Baseline: dict buckets per band and a Python union-find with path halving."""
    parent = list(range(len(keys)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for j in range(keys.shape[1]):
        buckets: dict[int, int] = {}
        for i, k in enumerate(keys[:, j].tolist()):
            first = buckets.setdefault(k, i)
            if first != i:
                a, b = find(first), find(i)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(keys))]


def write_tasks(directory: Path, n: int, bands: int) -> None:
    """Map-task files holding n synthetic documents (empty content: only the keys matter here)."""
    ids, chash, keys = synthetic(n, bands)
    schema = work_schema(bands)
    for t, lo in enumerate(range(0, n, ROWS_PER_TASK)):
        hi = min(lo + ROWS_PER_TASK, n)
        m = hi - lo
        cols = {
            "id": pa.array(ids[lo:hi]), "content": pa.array([""] * m), "path": pa.array([f"f{i}.py" for i in range(lo, hi)]),
            "repo": pa.array(["repo"] * m), "lang": pa.array(["Python"] * m), "license": pa.array(["MIT"] * m),
            "source": pa.array(["synthetic"] * m), "bytes": pa.array(np.full(m, 1000)), "stars": pa.nulls(m, pa.int64()),
            "cluster_id": pa.nulls(m, pa.string()), "order": pa.array(np.arange(lo, hi)),
            "content_hash": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(16), m, [None, pa.py_buffer(chash[lo:hi].tobytes())]), "eligible": pa.array(np.ones(m, bool)),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(keys[lo:hi].ravel()), bands),
            "contaminated": pa.array(np.zeros(m, bool)), "permissive": pa.array(np.ones(m, bool)),
        }
        table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
        atomic_write_parquet(directory / f"task-{t:06d}.kept.parquet", table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--bands", type=int, default=25)
    p.add_argument("--baseline-docs", type=int, default=200_000)
    p.add_argument("--write", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        write_tasks(Path(args.write), args.docs, args.bands)
        return

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--write", tmp, "--docs", str(args.docs), "--bands", str(args.bands)],
                       check=True)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        k = load_dedup_keys(sorted(Path(tmp).glob("*.kept.parquet")), args.bands)
        t_load = time.perf_counter() - t0
    n = len(k["id"])
    t0 = time.perf_counter()
    res = deduplicate(k["id"], k["content_hash"], k["bands"], k["eligible"], k["permissive"], k["stars"],
                      k["bytes"], k["order"])
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held = sum(a.nbytes for a in k.values()) / 2**20
    print(f"{n:,} documents x {args.bands} bands: loaded from {n // ROWS_PER_TASK} task files in {t_load:.1f}s, "
          f"clustered in {dt:.1f}s; {int((res.status == 2).sum()):,} near duplicates in {res.clusters:,} clusters")
    print(f"arrays held: {held:,.0f} MiB; peak RSS of the process: {peak:,.0f} MiB "
          f"(before loading: {rss0:,.0f} MiB)")

    keys = k["bands"]
    m = min(args.baseline_docs, n)
    t0 = time.perf_counter()
    ours = connected_components(keys[:m])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = python_union_find(keys[:m])
    t_base = time.perf_counter() - t0
    assert ours.tolist() == base, "the two clusterings disagree"
    print(f"components of {m:,} docs: vectorized {t_ours:.2f}s, Python union-find {t_base:.2f}s "
          f"-> {t_base / t_ours:.1f}x faster, identical labels")


if __name__ == "__main__":
    main()
