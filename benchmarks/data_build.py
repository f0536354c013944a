"""Corpus build speed: python-stdlib + python-packages with 1 worker (the baseline) and with all workers.

Prints docs/s and MB/s per core for every stage and overall, the speedup of all workers over one,
and the peak memory of the parent and of the largest worker. Each build runs in a fresh process.
With `--executor spark`, the baseline is the local executor with all workers and the contender the
Spark executor on local[N] with the same workers; both outputs are checked to be equal.

    python benchmarks/data_build.py [--workers N] [--executor local|spark] [--sources python-stdlib python-packages]
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


def child(args) -> None:
    from codekiln.config import load_config
    from codekiln.data.build import CorpusBuild

    config = load_config(None, args.overrides)
    t0 = time.perf_counter()
    result = CorpusBuild(args.sources, args.out, config, workers=args.workers, progress=False,
                         executor=args.executor).run()
    wall = time.perf_counter() - t0
    print(json.dumps({
        "wall": wall, "phases": result.timings, "stage_seconds": result.stage_seconds,
        "stages": result.report["stages"], "totals": result.report["totals"],
        "report": result.report,
        "peak_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def run(workers: int, sources: list[str], overrides: list[str], executor: str = "local") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--out", f"{tmp}/corpus",
               "--executor", executor, "--sources", *sources, "--overrides", *overrides]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(r: dict, workers: int, executor: str = "local") -> None:
    tot = r["totals"]
    print(f"\n== {executor} executor, {workers} worker(s): {r['wall']:.1f}s wall  "
          f"({', '.join(f'{k} {v:.1f}s' for k, v in r['phases'].items())})")
    print(f"{'stage':<12}{'docs in':>10}{'MB in':>9}{'cpu s':>8}{'docs/s/core':>13}{'MB/s/core':>11}")
    for s in r["stages"]:
        sec = r["stage_seconds"].get(s["name"], 0.0)
        if s["name"] in ("exact_dedup", "near_dedup", "decontam"):
            label = s["name"] + "*"
        else:
            label = s["name"]
        rate = f"{s['docs_in'] / sec:>13,.0f}{s['bytes_in'] / 1e6 / sec:>11.1f}" if sec > 0 else f"{'-':>13}{'-':>11}"
        print(f"{label:<12}{s['docs_in']:>10,}{s['bytes_in'] / 1e6:>9.1f}{sec:>8.2f}{rate}")
    print("  * map-side work per document (hashing, MinHash, needle search); the corpus-wide "
          f"dedup pass took {r['phases']['dedup']:.2f}s")
    print(f"overall: {tot['docs_in'] / r['wall']:,.0f} docs/s, {tot['bytes_in'] / 1e6 / r['wall']:.1f} MB/s "
          f"({tot['bytes_in'] / 1e6 / r['wall'] / workers:.1f} MB/s per core); "
          f"kept {tot['docs_out']:,} docs, {tot['bytes_out'] / 1e6:.1f} MB")
    if executor == "spark":
        worker = "not measured (Spark's JVM and Python workers outlive the measurement)"
    else:
        worker = f"{r['peak_child_mb']:.0f} MB" if workers > 1 else "none (ran inline)"
    print(f"peak memory (max RSS): parent {r['peak_parent_mb']:.0f} MB, largest worker {worker}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help="workers of the parallel run (0 = all cores)")
    p.add_argument("--executor", choices=("local", "spark"), default="local")
    p.add_argument("--sources", nargs="+", default=["python-stdlib", "python-packages"])
    p.add_argument("--overrides", nargs="*", default=[], help="config overrides, e.g. data.dedup.threshold=0.8")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    all_workers = args.workers or len(os.sched_getaffinity(0))
    if args.executor == "spark":
        base = run(all_workers, args.sources, args.overrides)
        report(base, all_workers)
        spark = run(all_workers, args.sources, args.overrides, "spark")
        report(spark, all_workers, "spark")
        same = spark["report"] == base["report"]
        print(f"\nspark local[{all_workers}] vs local executor, {all_workers} workers: "
              f"{base['wall'] / spark['wall']:.2f}x the local speed (wall {spark['wall']:.1f}s vs {base['wall']:.1f}s); "
              f"identical report.json: {same}")
        return
    base = run(1, args.sources, args.overrides)
    report(base, 1)
    if all_workers > 1:
        par = run(all_workers, args.sources, args.overrides)
        report(par, all_workers)
        print(f"\nspeedup with {all_workers} workers over 1: {base['wall'] / par['wall']:.2f}x wall "
              f"(map phase {base['phases']['map'] / par['phases']['map']:.2f}x)")


if __name__ == "__main__":
    main()
