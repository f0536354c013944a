"""Corpus build speed: python-stdlib + python-packages with 1 worker (the baseline) and with all workers.

Prints docs/s and MB/s per core for every stage and overall, the speedup of all workers over one,
and the peak memory of the parent and of the largest worker. Each build runs in a fresh process.
With `--executor spark`, the baseline is the local executor with all workers and the contender the
Spark executor on local[N] with the same workers; both outputs are checked to be equal.

Rounds interleave the baseline and the contender, so a change in machine load hits both. Every figure
is the median of --repeats builds with [min-max] where it is printed (per-stage CPU seconds: the
median, rates from the medians); speedups are ratios of medians.

    python benchmarks/data_build.py [--workers N] [--executor local|spark] [--repeats 3]
                                    [--sources python-stdlib python-packages]
    python benchmarks/data_build.py --quick    # smoke test: codekiln's own src/ as the one source, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402


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
    """One build in a fresh process: its timings, report and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--out", f"{tmp}/corpus",
               "--executor", executor, "--sources", *sources, "--overrides", *overrides]
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the {executor} build with {workers} worker(s) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(runs: list[dict], workers: int, executor: str = "local") -> None:
    """The table of one configuration over its runs."""
    r = runs[0]  # documents and bytes are the same in every run (checked in main)
    tot = r["totals"]
    walls = [x["wall"] for x in runs]
    phases = ", ".join(f"{k} {median([x['phases'][k] for x in runs]):.1f}s" for k in r["phases"])
    print(f"\n== {executor} executor, {workers} worker(s): {spread(walls, '.1f')} s wall  ({phases}, medians)")
    print(f"{'stage':<12}{'docs in':>10}{'MB in':>9}{'cpu s':>8}{'docs/s/core':>13}{'MB/s/core':>11}")
    for s in r["stages"]:
        sec = median([x["stage_seconds"].get(s["name"], 0.0) for x in runs])
        if s["name"] in ("exact_dedup", "near_dedup", "decontam"):
            label = s["name"] + "*"
        else:
            label = s["name"]
        rate = f"{s['docs_in'] / sec:>13,.0f}{s['bytes_in'] / 1e6 / sec:>11.1f}" if sec > 0 else f"{'-':>13}{'-':>11}"
        print(f"{label:<12}{s['docs_in']:>10,}{s['bytes_in'] / 1e6:>9.1f}{sec:>8.2f}{rate}")
    print("  * map-side work per document (hashing, MinHash, needle search); the corpus-wide "
          f"dedup pass took {spread([x['phases']['dedup'] for x in runs], '.2f')} s")
    mbs = [tot["bytes_in"] / 1e6 / w for w in walls]
    print(f"overall: {spread([tot['docs_in'] / w for w in walls])} docs/s, {spread(mbs, '.1f')} MB/s "
          f"({spread([m / workers for m in mbs], '.1f')} MB/s per core); "
          f"kept {tot['docs_out']:,} docs, {tot['bytes_out'] / 1e6:.1f} MB")
    if executor == "spark":
        worker = "not measured (Spark's JVM and Python workers outlive the measurement)"
    else:
        ran_inline = workers == 1 or all(x["peak_child_mb"] == 0 for x in runs)  # one task runs inline
        worker = "none (ran inline)" if ran_inline else f"{spread([x['peak_child_mb'] for x in runs])} MB"
    print(f"peak memory (max RSS): parent {spread([x['peak_parent_mb'] for x in runs])} MB, largest worker {worker}")


def same_output(runs: list[dict]) -> bool:
    """Whether every build wrote the same report.json (the builds are deterministic)."""
    return all(x["report"] == runs[0]["report"] for x in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help="workers of the parallel run (0 = all cores)")
    p.add_argument("--executor", choices=("local", "spark"), default="local")
    p.add_argument("--sources", nargs="+", default=["python-stdlib", "python-packages"])
    p.add_argument("--overrides", nargs="*", default=[], help="config overrides, e.g. data.dedup.threshold=0.8")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: codekiln's own src/ (unknown licenses allowed) as the one source, 1 round")
    add_repeats(p)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            # A snapshot, so that edits to the source tree during the run cannot make two builds differ.
            src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "codekiln")
            shutil.copytree(src, f"{tmp}/repos/codekiln", ignore=shutil.ignore_patterns("__pycache__"))
            args.sources = [f"{tmp}/repos"]
            args.overrides = [*args.overrides, "data.license.allow_unknown=true"]
        check_repeats(p, args)
        compare(args)


def compare(args) -> None:
    """Build with the baseline and the contender configuration, interleaved, and print both and the ratio."""
    all_workers = args.workers or len(os.sched_getaffinity(0))
    print(f"median [min-max] of {args.repeats} build(s) per configuration, each in a fresh process")
    if args.executor == "spark":
        base, spark = [], []
        for _ in range(args.repeats):
            base.append(run(all_workers, args.sources, args.overrides))
            spark.append(run(all_workers, args.sources, args.overrides, "spark"))
        report(base, all_workers)
        report(spark, all_workers, "spark")
        same = same_output(base + spark)
        print(f"\nspark local[{all_workers}] vs local executor, {all_workers} workers: "
              f"{ratio([x['wall'] for x in base], [x['wall'] for x in spark]):.2f}x the local speed (ratio of median "
              f"walls); identical report.json in every build: {same}")
        return
    base, par = [], []
    for _ in range(args.repeats):
        base.append(run(1, args.sources, args.overrides))
        if all_workers > 1:
            par.append(run(all_workers, args.sources, args.overrides))
    report(base, 1)
    if par:
        report(par, all_workers)
        print(f"\nspeedup with {all_workers} workers over 1: "
              f"{ratio([x['wall'] for x in base], [x['wall'] for x in par]):.2f}x wall (map phase "
              f"{ratio([x['phases']['map'] for x in base], [x['phases']['map'] for x in par]):.2f}x), ratios of "
              f"medians; identical report.json in every build: {same_output(base + par)}")


if __name__ == "__main__":
    main()
