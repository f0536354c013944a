"""Repeated measurements for the benchmarks: every figure is the median of N runs, printed with its range.

A single run on a shared or noisy machine can be off by 2x either way, and the best of N hides how
noisy the machine was; the median with min-max shows both the figure and how far to trust it.
Ratios are ratios of medians.
"""

from __future__ import annotations

import argparse
import statistics


DEFAULT = 3


def add_repeats(parser: argparse.ArgumentParser) -> None:
    """The --repeats option every benchmark takes (runs per figure; records need at least 3)."""
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs per figure; the median is reported with min-max (default {DEFAULT}, "
                             "1 with --quick)")


def check_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the default repeat count (1 for a --quick smoke test), refuse one below 1, and say that
    fewer than 3 runs are not a figure to record."""
    if args.repeats is None:
        args.repeats = 1 if getattr(args, "quick", False) else DEFAULT
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.repeats < 3:
        print(f"note: {args.repeats} run(s) per figure; recorded figures need --repeats 3 or more", flush=True)


def median(values) -> float:
    """The median of the runs' values."""
    return statistics.median(values)


def spread(values, fmt: str = ",.0f") -> str:
    """'median [min-max]' of the runs' values, each formatted with `fmt`."""
    values = list(values)
    med, lo, hi = (format(v, fmt) for v in (median(values), min(values), max(values)))
    return f"{med} [{lo}-{hi}]" if len(values) > 1 else med


def ratio(numerator, denominator) -> float:
    """Ratio of the medians of two lists of runs."""
    return median(numerator) / median(denominator)
