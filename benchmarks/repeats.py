"""Repeated measurements for the benchmarks: every figure is the median of N runs, printed with its range.

A single run on a shared or noisy machine can be off by 2x either way, and the best of N hides how
noisy the machine was; the median with min-max shows both the figure and how far to trust it.
Ratios are ratios of medians.
"""

from __future__ import annotations

import argparse
import statistics


def add_repeats(parser: argparse.ArgumentParser, default: int = 3) -> None:
    """The --repeats option every benchmark takes (runs per figure; records need at least 3)."""
    parser.add_argument("--repeats", type=int, default=default,
                        help=f"runs per figure; the median is reported with min-max (default {default})")


def check_repeats(parser: argparse.ArgumentParser, repeats: int) -> None:
    """Refuse a repeat count below 1; say that fewer than 3 runs are not a figure to record."""
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    if repeats < 3:
        print(f"note: {repeats} run(s) per figure; recorded figures need --repeats 3 or more", flush=True)


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
