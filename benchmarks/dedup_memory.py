"""Near-dedup clustering at scale: time and peak memory of the corpus-wide dedup pass for N documents.

The pass holds per document only its id, content hash and LSH band keys (25 x 8 bytes at the
default threshold), never shingles. This writes N synthetic documents' keys (with planted duplicate
clusters) as map-task Parquet files, exactly as a build leaves them, then measures in a fresh process
the build's own loading (`load_dedup_keys`) and clustering (`deduplicate`). Baseline, in the same run:
a pure-Python union-find over the same LSH buckets (the classic approach) on the first
`--baseline-docs` documents, checked to give identical clusters.

Each of --repeats measurements of the pass runs in a fresh process, so its peak RSS is its own; every
time and memory figure is the median of the runs with [min-max], and the speedup is a ratio of medians.

    python benchmarks/dedup_memory.py [--docs 1000000] [--bands 25] [--repeats 3]
    python benchmarks/dedup_memory.py --quick     # smoke test: 40,000 documents, baseline on 10,000, 1 run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

from codekiln.data.build import load_dedup_keys, work_schema  # noqa: E402
from codekiln.data.dedup import connected_components, deduplicate  # noqa: E402
from codekiln.files import atomic_write_parquet  # noqa: E402

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


def measure(directory: Path, bands: int) -> dict:
    """Load and cluster the task files in this (fresh) process: seconds, results and memory."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    k = load_dedup_keys(sorted(directory.glob("*.kept.parquet")), bands)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = deduplicate(k["id"], k["content_hash"], k["bands"], k["eligible"], k["permissive"], k["stars"],
                      k["bytes"], k["order"])
    t_cluster = time.perf_counter() - t0
    return {"docs": len(k["id"]), "load_s": t_load, "cluster_s": t_cluster,
            "near": int((res.status == 2).sum()), "clusters": int(res.clusters),
            "held_mib": sum(a.nbytes for a in k.values()) / 2**20,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss0_mib": rss0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--bands", type=int, default=25)
    p.add_argument("--baseline-docs", type=int, default=200_000)
    p.add_argument("--quick", action="store_true", help="smoke test: 40,000 documents, baseline on 10,000, 1 run")
    add_repeats(p)
    p.add_argument("--write", help=argparse.SUPPRESS)
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        write_tasks(Path(args.write), args.docs, args.bands)
        return
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.bands)))
        return
    if args.quick:
        args.docs, args.baseline_docs = 40_000, 10_000
    check_repeats(p, args)

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--write", tmp, "--docs", str(args.docs), "--bands", str(args.bands)],
                       check=True)
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--measure", tmp, "--bands", str(args.bands)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the measuring process failed:\n{out.stderr}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        k = load_dedup_keys(sorted(Path(tmp).glob("*.kept.parquet")), args.bands)
    if len({(r["near"], r["clusters"]) for r in runs}) != 1:
        sys.exit("the runs found different clusters: the pass is not deterministic")

    def col(key: str) -> list[float]:
        return [r[key] for r in runs]

    n, files = runs[0]["docs"], -(-runs[0]["docs"] // ROWS_PER_TASK)
    print(f"median [min-max] of {args.repeats} run(s), each in a fresh process")
    print(f"{n:,} documents x {args.bands} bands: loaded from {files} task files in {spread(col('load_s'), '.1f')} s, "
          f"clustered in {spread(col('cluster_s'), '.1f')} s; {runs[0]['near']:,} near duplicates in "
          f"{runs[0]['clusters']:,} clusters")
    print(f"arrays held: {median(col('held_mib')):,.0f} MiB; peak RSS of the process: "
          f"{spread(col('peak_mib'))} MiB (before loading: {spread(col('rss0_mib'))} MiB)")

    keys = k["bands"]
    m = min(args.baseline_docs, n)
    t_ours, t_base = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = connected_components(keys[:m])
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base = python_union_find(keys[:m])
        t_base.append(time.perf_counter() - t0)
        assert ours.tolist() == base, "the two clusterings disagree"
    print(f"components of {m:,} docs: vectorized {spread(t_ours, '.2f')} s, Python union-find "
          f"{spread(t_base, '.2f')} s -> vectorized at {ratio(t_base, t_ours):.1f}x the baseline's speed (ratio of "
          "medians), identical labels")


if __name__ == "__main__":
    main()
