"""The unbiased pass@k estimator: hand-computed values and agreement with the exact binomial formula."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codekiln.eval.passk import estimate_pass_at_k, pass_at_k


@pytest.mark.parametrize("n, c, k, expected", [
    (10, 3, 1, 0.3),                # pass@1 is the pass rate
    (10, 3, 10, 1.0),               # n - c < k: every draw of 10 holds a passing sample
    (10, 0, 1, 0.0),
    (10, 0, 10, 0.0),
    (5, 2, 2, 0.7),                 # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (1, 1, 1, 1.0),
    (200, 1, 100, 0.5),             # one passing sample among 200, draw half of them
])
def test_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@given(n=st.integers(1, 300), data=st.data())
@settings(max_examples=300, deadline=None)
def test_matches_exact_binomial_formula(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9)


@given(n=st.integers(2, 100), data=st.data())
@settings(max_examples=100, deadline=None)
def test_monotone_in_k_and_c(n, data):
    c = data.draw(st.integers(0, n - 1))
    k = data.draw(st.integers(1, n - 1))
    assert pass_at_k(n, c, k) <= pass_at_k(n, c, k + 1) + 1e-12
    assert pass_at_k(n, c, k) <= pass_at_k(n, c + 1, k) + 1e-12


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_out_of_range_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_over_tasks_and_per_task_values():
    result = estimate_pass_at_k({"a": (10, 3), "b": (10, 0), "c": (10, 10)}, ks=(1, 10))
    assert result.mean["1"] == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert result.mean["10"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert result.per_task["a"] == pytest.approx({"1": 0.3, "10": 1.0})
    assert result.skipped_k == []
    assert result.min_samples == 10


def test_k_larger_than_some_tasks_n_is_not_reported():
    result = estimate_pass_at_k({"a": (200, 20), "b": (5, 1)}, ks=(100, 1, 10))
    assert list(result.mean) == ["1"]          # sorted ks; 10 and 100 exceed task b's 5 samples
    assert result.skipped_k == [10, 100]
    assert result.min_samples == 5
    assert set(result.per_task["a"]) == {"1", "10", "100"}   # task a has enough samples for each k
    assert set(result.per_task["b"]) == {"1"}


def test_no_tasks_reports_nothing():
    result = estimate_pass_at_k({}, ks=(1,))
    assert result.mean == {} and result.skipped_k == [1]
