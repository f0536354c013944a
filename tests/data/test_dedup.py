"""MinHash, LSH parameters, connected components and the keeper policy."""

import numpy as np
import pytest

from codekiln.config import DedupConfig
from codekiln.data.dedup import EXACT, KEEP, NEAR, connected_components, deduplicate
from codekiln.data.minhash import LSHParams, MinHasher, candidate_probability, estimated_jaccard, optimal_bands

BASE = "\n".join(f"def function_{i}(alpha, beta):\n    return alpha * {i} + beta - compute(alpha, {i})" for i in range(60))


def test_bands_rows_follow_threshold():
    b7, r7 = optimal_bands(0.7, 256)
    b9, r9 = optimal_bands(0.9, 256)
    assert b7 * r7 <= 256 and b9 * r9 <= 256
    # A higher threshold needs more rows per band (a steeper, later S-curve).
    assert r9 > r7
    p = candidate_probability(0.7, b7, r7)
    assert 0.3 < p < 0.8
    assert candidate_probability(0.9, b7, r7) > 0.95
    assert candidate_probability(0.3, b7, r7) < 0.05


def test_params_from_config_explicit_and_derived():
    assert LSHParams.from_config(DedupConfig(bands=25, rows=10)).bands == 25
    derived = LSHParams.from_config(DedupConfig(threshold=0.8))
    assert (derived.bands, derived.rows) == optimal_bands(0.8, 256)


def test_signature_estimates_jaccard():
    mh = MinHasher(LSHParams())
    a = mh.signature(BASE)
    same = mh.signature(BASE)
    assert np.array_equal(a, same)
    # Change a few lines: high similarity; a different file: low.
    edited = BASE.replace("function_3(", "renamed_3(").replace("function_40(", "other_40(")
    assert estimated_jaccard(a, mh.signature(edited)) > 0.8
    other = "\n".join(f"class Widget{i}:\n    size = {i * 7}\n    name = 'w{i}'" for i in range(80))
    assert estimated_jaccard(a, mh.signature(other)) < 0.1


def test_signature_independent_of_process_hash_seed():
    # Fixed seeds and xxhash: the same signature in every process (PYTHONHASHSEED plays no part).
    import subprocess
    import sys

    code = ("from codekiln.data.minhash import MinHasher, LSHParams; import sys; "
            "sys.stdout.write(MinHasher(LSHParams()).signature(open(sys.argv[1]).read()).tobytes().hex())")
    import tempfile, os
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BASE)
    try:
        outs = {subprocess.run([sys.executable, "-c", code, f.name], capture_output=True, text=True,
                               env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    finally:
        os.unlink(f.name)
    assert len(outs) == 1 and len(outs.pop()) == 256 * 8


def test_too_few_tokens_gives_no_signature():
    mh = MinHasher(LSHParams(min_tokens=10))
    assert mh.signature("x = 1") is None


def test_connected_components_transitive():
    # rows 0-1 share column 0, rows 1-2 share column 1, row 3 alone, rows 4-5 share column 1.
    keys = np.array([[1, 10], [1, 11], [2, 11], [3, 12], [4, 13], [5, 13]], dtype=np.uint64)
    assert connected_components(keys).tolist() == [0, 0, 0, 3, 4, 4]


def test_connected_components_long_chain():
    n = 500
    keys = np.zeros((n, 2), dtype=np.uint64)
    # A chain in reverse order alternating columns: i joins i+1.
    for i in range(n):
        keys[i, 0] = 1000 + (i // 2)  # pairs (0,1), (2,3), ...
        keys[i, 1] = 5000 + ((i + 1) // 2)  # pairs (1,2), (3,4), ...
    assert set(connected_components(keys).tolist()) == {0}


def _docs(n):
    ids = np.array([f"{i:032x}" for i in range(n)], dtype="U32")
    return ids


def test_exact_dedup_keeper_policy_and_cluster_id():
    ids = np.array(["c" * 32, "a" * 32, "b" * 32, "d" * 32], dtype="U32")
    chash = np.array([b"x" * 16, b"x" * 16, b"x" * 16, b"y" * 16], dtype="S16")
    bands = np.arange(8, dtype=np.uint64).reshape(4, 2)
    eligible = np.ones(4, bool)
    permissive = np.array([True, False, True, True])
    stars = np.array([5, 100, 9, -1])
    nbytes = np.array([10, 10, 10, 10])
    order = np.arange(4)
    res = deduplicate(ids, chash, bands, eligible, permissive, stars, nbytes, order)
    # Permissive beats stars: doc 2 (permissive, 9 stars) is kept over doc 1 (100 stars, not permissive).
    assert res.status.tolist() == [EXACT, EXACT, KEEP, KEEP]
    # The cluster id is the smallest id in the group, whoever is kept.
    assert res.cluster_id.tolist()[:3] == ["a" * 32] * 3
    assert res.cluster_id[3] == "d" * 32


def test_near_dedup_clusters_and_longest_keeper():
    ids = _docs(5)
    chash = np.array([bytes([i]) * 16 for i in range(5)], dtype="S16")
    bands = np.array([[1, 2], [1, 3], [9, 3], [7, 8], [4, 5]], dtype=np.uint64)
    eligible = np.array([True, True, True, True, False])
    res = deduplicate(ids, chash, bands, eligible, np.ones(5, bool), np.full(5, -1), np.array([5, 50, 7, 3, 3]),
                      np.arange(5))
    assert res.status.tolist() == [NEAR, KEEP, NEAR, KEEP, KEEP]
    assert res.cluster_id.tolist() == [ids[0]] * 3 + [ids[3], ids[4]]
    assert res.clusters == 1


def test_switches():
    ids = _docs(2)
    chash = np.array([b"z" * 16] * 2, dtype="S16")
    bands = np.array([[1], [1]], dtype=np.uint64)
    args = (ids, chash, bands, np.ones(2, bool), np.ones(2, bool), np.zeros(2, int), np.ones(2, int), np.arange(2))
    assert deduplicate(*args, exact=False, near=False).status.tolist() == [KEEP, KEEP]
    assert deduplicate(*args, exact=False, near=True).status.tolist() == [KEEP, NEAR]
    assert deduplicate(*args, exact=True, near=False).status.tolist() == [KEEP, EXACT]


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    ids = _docs(n)
    res = deduplicate(ids, np.array([b"q" * 16] * n, dtype="S16"), np.zeros((n, 3), np.uint64), np.ones(n, bool),
                      np.ones(n, bool), np.zeros(n, int), np.ones(n, int), np.arange(n))
    assert res.status.tolist() == [KEEP] * n
