"""Learning-rate schedules: pure functions of the step, so a resumed run needs no scheduler state.

Every schedule starts with a linear warmup that reaches the peak at the last warmup step (step 0 is
peak / warmup_steps, never zero, so the first step is not wasted). After warmup:

- cosine: half a cosine from peak down to min_lr_ratio * peak at total_steps.
- linear: a straight line from peak down to the minimum (Replit Code v1.5's cooldown).
- wsd: warmup-stable-decay; hold the peak, then decay linearly to the minimum over the last
  `decay_fraction` of total_steps. Checkpoints from the stable phase can be branched and cooled down.
- constant: hold the peak.

Past total_steps every schedule keeps its final value.

Continued pretraining re-warms by running the schedule again from step 0 with a new peak (and the
new run's total_steps): the step count restarts, so the warmup ramps up again from peak / warmup_steps.
"""

from __future__ import annotations

import math

from codekiln.errors import UserError

SCHEDULES = ("cosine", "linear", "wsd", "constant")


def lr_at(step: int, *, peak: float, schedule: str, warmup_steps: int, total_steps: int,
          min_lr_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """Learning rate at `step` (0-based) for the named schedule."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown LR schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or total_steps < 0:
        raise UserError(f"warmup_steps and total_steps must be >= 0, got {warmup_steps} and {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise UserError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if not 0.0 <= decay_fraction <= 1.0:
        raise UserError(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    # Past the end every schedule holds its final value (also when the decay segment is empty).
    step = min(step, max(total_steps, warmup_steps))
    low = peak * min_lr_ratio
    if schedule == "constant":
        return peak
    if schedule == "wsd":
        decay_start = max(warmup_steps, total_steps - round(decay_fraction * total_steps))
        frac = (step - decay_start) / max(1, total_steps - decay_start)
        return peak - (peak - low) * min(1.0, max(0.0, frac))
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "cosine":
        return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak - (peak - low) * progress  # linear
