"""Tokenization speed: `codekiln data tokenize` against plain `tokenizers` `encode_batch` on the same text.

Both encode the same documents of a corpus with the same tokenizer, in the same run:
  baseline   Tokenizer.encode_batch (Rust threads over all cores), text already in memory
  codekiln   the `codekiln data tokenize` command end to end, in its own process (start-up, Parquet in,
             shards and meta.json out), N workers
Rounds interleave the two; each figure is the median of --repeats rounds with [min-max], and the ratio
is the ratio of the medians.

    python benchmarks/tokenize.py --corpus runs/demo/corpus --tokenizer runs/demo/tokenizer [--workers N] [--repeats 3]
    python benchmarks/tokenize.py --quick    # smoke test: a corpus of codekiln's own source, a 1,000-token tokenizer
"""

from __future__ import annotations

import os
import sys

# This file's name shadows the standard library's `tokenize` (imported by linecache, inspect, ...)
# for any script run from this folder.
if __name__ != "__main__":
    # Imported as `tokenize` by code that meant the standard library: become that module.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        "tokenize", os.path.join(sysconfig.get_paths()["stdlib"], "tokenize.py"))
    _std = importlib.util.module_from_spec(_spec)
    sys.modules["tokenize"] = _std
    _spec.loader.exec_module(_std)
    globals().update({k: v for k, v in vars(_std).items() if not k.startswith("__")})
else:
    # Run as a script: take this folder off the import path before anything imports `tokenize`.
    # It goes back at the end of the path, behind the standard library, for the shared `repeats` helper.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here] + [_here]



def codekiln(*args: str) -> None:
    """Run a codekiln command in a fresh process; its output is shown only when it fails."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "codekiln", *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"codekiln {' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def main() -> None:
    """Run the benchmark (imports live here, so importing this file as `tokenize` stays cheap)."""
    import argparse
    import tempfile
    import time

    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from repeats import add_repeats, check_repeats, ratio, spread

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="runs/demo/corpus")
    p.add_argument("--tokenizer", default="runs/demo/tokenizer")
    p.add_argument("--workers", type=int, default=0, help="0 = all cores")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: build a small corpus and tokenizer from codekiln's own source, 1 round")
    add_repeats(p)
    args = p.parse_args()
    cores = args.workers or len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
            args.corpus, args.tokenizer = f"{tmp}/corpus", f"{tmp}/tokenizer"
            codekiln("data", "build", src, "--out", args.corpus, "--quiet", "data.license.allow_unknown=true")
            codekiln("tokenizer", "train", "--corpus", args.corpus, "--out", args.tokenizer, "--vocab-size", "1000",
                     "--quiet")
        check_repeats(p, args)

        texts = pq.read_table(f"{args.corpus}/data", columns=["content"]).column("content").to_pylist()
        mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
        tok = Tokenizer.from_file(f"{args.tokenizer}/tokenizer.json")
        base, ours = [], []
        for r in range(args.repeats):  # rounds interleave the two, so a change in machine load hits both
            t0 = time.perf_counter()
            for i in range(0, len(texts), 1024):
                tok.encode_batch(texts[i : i + 1024], add_special_tokens=False)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            codekiln("data", "tokenize", "--corpus", args.corpus, "--tokenizer", args.tokenizer,
                     "--out", f"{tmp}/shards-{r}", "--workers", str(cores))
            ours.append(time.perf_counter() - t0)

    def line(seconds: list[float]) -> str:
        return (f"{mb:,.1f} MB in {spread(seconds, '.1f')} s = {spread([mb / s for s in seconds], '.1f')} MB/s, "
                f"{spread([mb / s / cores for s in seconds], '.1f')} MB/s per core")

    print(f"median [min-max] of {args.repeats} round(s)")
    print(f"baseline  tokenizers encode_batch ({cores} cores): {line(base)}")
    print(f"codekiln  data tokenize ({cores} workers, Parquet to shards, own process): {line(ours)}")
    print(f"ratio: codekiln runs at {ratio(base, ours):.2f}x the speed of the in-memory encode_batch baseline "
          "(ratio of medians)")


if __name__ == "__main__":
    main()
