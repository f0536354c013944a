"""Exact and near deduplication over arrays of per-document keys.

Exact: documents with the same content hash form a group; the best by the keeper policy stays.
Near: documents sharing any LSH band key are joined; clusters are the connected components, so
duplicates of duplicates collapse. The best document of each cluster stays.

Keeper policy (The Stack v2; KEEPER_POLICY, which the Spark executor sorts by too): permissive
license first, then stars, then longest; ties go to the smallest id and then to input order, so the
choice never depends on the executor. A cluster's id
is the smallest document id in it, exact duplicates included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP, EXACT, NEAR = 0, 1, 2


# The keeper policy, the one definition both executors sort by: (key, most wanted first is the
# largest, value of a missing key). Ties on every key are impossible: `order` is unique.
KEEPER_POLICY: tuple[tuple[str, bool, object], ...] = (
    ("permissive", True, None),
    ("stars", True, -1),
    ("bytes", True, None),
    ("id", False, None),
    ("order", False, None),
)


def policy_rank(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Rank of every document under KEEPER_POLICY (0 = most wanted); columns hold the policy's keys,
    missing stars already replaced by the policy's value."""
    keys = []
    for name, largest_first, _missing in KEEPER_POLICY:
        col = columns[name]
        if largest_first:
            col = ~col if col.dtype == bool else -col
        keys.append(col)
    # np.lexsort sorts by the last key first.
    idx = np.lexsort(tuple(reversed(keys)))
    rank = np.empty(len(idx), dtype=np.int64)
    rank[idx] = np.arange(len(idx))
    return rank


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of runs of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate(([0], change))


def connected_components(keys: np.ndarray) -> np.ndarray:
    """Component label (smallest member index) for rows joined by an equal value in any column.

    Min-label propagation over the groups of each column, with pointer jumping, until stable:
    vectorized, memory linear in the rows, no list of candidate pairs.
    """
    n, cols = keys.shape
    labels = np.arange(n, dtype=np.int64)
    groups = []  # per column: (members sorted by key, start offsets) over groups of 2 or more
    for j in range(cols):
        order = np.argsort(keys[:, j], kind="stable")
        starts = _group_starts(keys[order, j])
        sizes = np.diff(np.append(starts, n))
        big = sizes >= 2
        if not big.any():
            continue
        member_mask = np.repeat(big, sizes)
        members = order[member_mask]
        new_starts = np.concatenate(([0], np.cumsum(sizes[big])[:-1]))
        groups.append((members, new_starts, sizes[big]))
    changed = True
    while changed:
        changed = False
        for members, starts, sizes in groups:
            cur = labels[members]
            gmin = np.minimum.reduceat(cur, starts)
            new = np.repeat(gmin, sizes)
            upd = new < cur
            if upd.any():
                changed = True
                # Lower the member and its current root, so chains collapse quickly.
                np.minimum.at(labels, cur[upd], new[upd])
                labels[members[upd]] = new[upd]
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    return labels


@dataclass
class DedupResult:
    """Per document: KEEP, EXACT or NEAR, and its cluster id."""

    status: np.ndarray
    cluster_id: np.ndarray
    clusters: int  # near-duplicate clusters with more than one document


def deduplicate(ids: np.ndarray, content_hash: np.ndarray, band_keys: np.ndarray, eligible: np.ndarray,
                permissive: np.ndarray, stars: np.ndarray, nbytes: np.ndarray, order: np.ndarray,
                exact: bool = True, near: bool = True) -> DedupResult:
    """Exact then near deduplication of n documents; band_keys is (n, bands) uint64."""
    n = len(ids)
    status = np.zeros(n, dtype=np.int8)
    rank = policy_rank({"permissive": permissive, "stars": stars, "bytes": nbytes, "id": ids, "order": order})
    # rep[i]: the exact-group keeper that stands for document i.
    rep = np.arange(n, dtype=np.int64)
    if exact and n:
        by_hash = np.lexsort((rank, content_hash))
        starts = _group_starts(content_hash[by_hash])
        sizes = np.diff(np.append(starts, n))
        keeper = np.repeat(by_hash[starts], sizes)
        rep[by_hash] = keeper
        status[rep != np.arange(n)] = EXACT
    survivors = np.flatnonzero(status == KEEP)
    comp = np.arange(n, dtype=np.int64)  # component of each survivor, as a document index
    clusters = 0
    if near and survivors.size:
        cand = survivors[eligible[survivors]]
        if cand.size:
            labels = connected_components(band_keys[cand])
            comp[cand] = cand[labels]
            # Keeper of each component: the best-ranked member.
            by_comp = np.lexsort((rank[cand], comp[cand]))
            starts = _group_starts(comp[cand][by_comp])
            sizes = np.diff(np.append(starts, cand.size))
            best = np.repeat(cand[by_comp][starts], sizes)
            members = cand[by_comp]
            status[members[best != members]] = NEAR
            clusters = int((sizes >= 2).sum())
    # Every document belongs to the component of its exact-group keeper.
    comp = comp[rep]
    by_comp = np.lexsort((ids, comp))
    starts = _group_starts(comp[by_comp])
    sizes = np.diff(np.append(starts, n))
    cluster_id = np.empty(n, dtype=ids.dtype)
    cluster_id[by_comp] = np.repeat(ids[by_comp][starts], sizes)
    return DedupResult(status, cluster_id, clusters)
