"""LR schedules as pure functions of the step: warmup, each decay shape, the tail, and re-warming."""

import math

import pytest

from codekiln.errors import UserError
from codekiln.train.schedule import SCHEDULES, lr_at

PEAK = 1e-3
MIN = 1e-4  # PEAK * min_lr_ratio 0.1


def lr(step, schedule, warmup=10, total=110, **kw):
    return lr_at(step, peak=PEAK, schedule=schedule, warmup_steps=warmup, total_steps=total, **kw)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warmup_is_linear_and_never_zero(schedule):
    assert lr(0, schedule) == pytest.approx(PEAK / 10)
    assert lr(4, schedule) == pytest.approx(PEAK / 2)
    assert lr(9, schedule) == pytest.approx(PEAK)
    assert lr(10, schedule) == pytest.approx(PEAK)  # first step after warmup is still the peak


def test_cosine_values():
    assert lr(60, "cosine") == pytest.approx((PEAK + MIN) / 2)  # halfway through the decay
    assert lr(35, "cosine") == pytest.approx(MIN + (PEAK - MIN) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr(110, "cosine") == pytest.approx(MIN)


def test_linear_values():
    assert lr(60, "linear") == pytest.approx((PEAK + MIN) / 2)
    assert lr(35, "linear") == pytest.approx(PEAK - (PEAK - MIN) * 0.25)
    assert lr(110, "linear") == pytest.approx(MIN)


def test_wsd_holds_peak_then_decays_over_the_last_fraction():
    # total 100, decay_fraction 0.2: stable through step 80, linear to MIN at step 100.
    kw = dict(total=100, decay_fraction=0.2)
    assert lr(50, "wsd", **kw) == pytest.approx(PEAK)
    assert lr(80, "wsd", **kw) == pytest.approx(PEAK)
    assert lr(90, "wsd", **kw) == pytest.approx((PEAK + MIN) / 2)
    assert lr(95, "wsd", **kw) == pytest.approx(PEAK - (PEAK - MIN) * 0.75)
    assert lr(100, "wsd", **kw) == pytest.approx(MIN)


def test_wsd_decay_never_starts_inside_warmup():
    # The decay segment would begin at step 2, but warmup runs to step 10.
    assert lr(9, "wsd", warmup=10, total=10, decay_fraction=0.8) == pytest.approx(PEAK)
    assert lr(10, "wsd", warmup=10, total=20, decay_fraction=0.8) == pytest.approx(PEAK)
    assert lr(15, "wsd", warmup=10, total=20, decay_fraction=0.8) == pytest.approx((PEAK + MIN) / 2)


def test_constant_holds_peak():
    assert all(lr(s, "constant") == pytest.approx(PEAK) for s in range(10, 300, 7))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_monotonic_decay_after_warmup(schedule):
    values = [lr(s, schedule) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] > values[-1]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_beyond_total_steps_keeps_the_final_value(schedule):
    final = lr(110, schedule)
    assert lr(111, schedule) == final
    assert lr(10_000, schedule) == final


def test_wsd_without_decay_segment_stays_at_peak_past_the_end():
    assert lr(500, "wsd", decay_fraction=0.0) == pytest.approx(PEAK)


def test_min_lr_ratio_sets_the_floor():
    assert lr(110, "cosine", min_lr_ratio=0.0) == pytest.approx(0.0)
    assert lr(110, "linear", min_lr_ratio=0.5) == pytest.approx(PEAK / 2)


def test_unknown_schedule_raises_user_error():
    with pytest.raises(UserError, match="step_decay"):
        lr(0, "step_decay")


def test_rewarm_for_continued_pretraining_ramps_up_again():
    # First run ends at its minimum; the continued run restarts the step count with a new peak.
    end_of_first = lr(110, "cosine")
    new_peak = 5e-4
    second = [lr_at(s, peak=new_peak, schedule="cosine", warmup_steps=10, total_steps=50) for s in range(12)]
    assert end_of_first == pytest.approx(MIN)
    assert second[0] == pytest.approx(new_peak / 10)
    assert all(a < b for a, b in zip(second[:10], second[1:10]))
    assert second[9] == pytest.approx(new_peak)
