"""Tokenization speed: `codekiln data tokenize` against plain `tokenizers` `encode_batch` on the same text.

Both encode the same documents of a corpus with the same tokenizer, in the same run:
  baseline   Tokenizer.encode_batch (Rust threads over all cores), text already in memory
  codekiln   `codekiln data tokenize` end to end (Parquet in, shards and meta.json out), N workers
Prints MB/s and MB/s per core for each and the ratio.

    python benchmarks/tokenize.py --corpus runs/demo/corpus --tokenizer runs/demo/tokenizer [--workers N]
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
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]



def main() -> None:
    """Run the benchmark (imports live here, so importing this file as `tokenize` stays cheap)."""
    import argparse
    import tempfile
    import time

    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from codekiln.tokenizer.shards import tokenize_corpus

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="runs/demo/corpus")
    p.add_argument("--tokenizer", default="runs/demo/tokenizer")
    p.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = p.parse_args()
    cores = args.workers or len(os.sched_getaffinity(0))

    texts = pq.read_table(f"{args.corpus}/data", columns=["content"]).column("content").to_pylist()
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    tok = Tokenizer.from_file(f"{args.tokenizer}/tokenizer.json")
    t0 = time.perf_counter()
    for i in range(0, len(texts), 1024):
        tok.encode_batch(texts[i : i + 1024], add_special_tokens=False)
    base = time.perf_counter() - t0
    print(f"baseline  tokenizers encode_batch ({cores} cores): {mb:,.1f} MB in {base:.1f}s = {mb / base:.1f} MB/s, "
          f"{mb / base / cores:.1f} MB/s per core")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tokenize_corpus(args.corpus, args.tokenizer, f"{tmp}/shards", workers=cores)
        ours = time.perf_counter() - t0
    print(f"codekiln  data tokenize ({cores} workers, Parquet to shards): {mb:,.1f} MB in {ours:.1f}s = "
          f"{mb / ours:.1f} MB/s, {mb / ours / cores:.1f} MB/s per core")
    print(f"ratio: codekiln runs at {base / ours:.2f}x the speed of the in-memory encode_batch baseline")


if __name__ == "__main__":
    main()
