"""The learning-rate schedule, laid over the epochs or over a time budget.

Without a budget, warmup + cosine (or step decay) run over ``epochs x steps_per_epoch`` optimizer steps.
With ``--minutes M`` the cosine runs over the *time* the budget leaves for training: the schedule's progress
is the larger of the fraction of steps done and the fraction of training time used, so the learning rate
reaches its floor when the budget runs out (or the epochs do, whichever comes first: ``--epochs`` is then an
upper bound), whatever the speed of the machine or the load on it. The step time need not be predicted: it
is re-measured at every step by the clock itself.

The budget covers the whole run, validation and checkpoints included: the clock counts wall time from the
start of training (across ``--resume``: the time used before is saved in ``last.pt``), and training stops
early enough to leave time for the last validation and checkpoint, whose duration is measured at each epoch
(:meth:`TrainingClock.reserve`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

# Before the first validation is measured, this fraction of the budget is kept for the final one.
INITIAL_RESERVE = 0.04
# The measured validation + checkpoint time is padded by this factor (it varies from epoch to epoch).
RESERVE_MARGIN = 1.25
# With a time budget the warmup ends after this share of the training time at the latest (100 warmup steps
# would be most of a short CPU budget).
WARMUP_TIME_SHARE = 0.05
# Learning rate at the floor, as a fraction of the peak: cosine to 0 (the classic schedule).
FLOOR = 0.0


class TrainingClock:
    """Seconds of a run: those used before (a resumed run) plus wall time since :meth:`start`.

    Args:
        minutes: the budget (0: none).
        used_before: seconds the run used before this process (from ``last.pt``).
        now: the clock to read (``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, minutes: float, used_before: float = 0.0, now: Callable[[], float] = time.monotonic):
        self.budget = 60.0 * float(minutes)
        self.used_before = float(used_before)
        self.now = now
        self.started = now()
        self.closing = INITIAL_RESERVE * self.budget  # seconds kept for the final validation + checkpoint

    @property
    def limited(self) -> bool:
        return self.budget > 0

    def used(self) -> float:
        """Seconds of the run so far."""
        return self.used_before + (self.now() - self.started)

    def reserve(self, seconds: float) -> None:
        """Record how long the last validation and checkpoint took; that much (padded) is kept for the end."""
        self.closing = RESERVE_MARGIN * max(0.0, float(seconds))

    def training_budget(self) -> float:
        """Seconds available for training steps: the budget minus the reserve for the final validation."""
        return max(1e-9, self.budget - self.closing)

    def progress(self) -> float:
        """Fraction of the training time used, 0..1 (0 without a budget)."""
        return min(1.0, self.used() / self.training_budget()) if self.limited else 0.0

    def past_deadline(self) -> bool:
        """Whether training must stop now to finish validation and checkpoints within the budget."""
        return self.limited and self.used() >= self.training_budget()


def schedule_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    time_progress: float,
    kind: str = "cosine",
    decay_every: int = 0,
    gamma: float = 0.1,
) -> float:
    """The learning rate at optimizer step ``step`` as a fraction of the peak.

    A linear warmup ramp from 0.1 % over ``warmup_steps`` (at most half the steps, and at most
    :data:`WARMUP_TIME_SHARE` of a time budget) times ``"cosine"`` from 1
    to :data:`FLOOR` over the larger of the step progress and ``time_progress``, or times ``"step"``
    (``gamma`` every ``decay_every`` steps). The product reaches the floor when the time runs out even if a
    budget too short for the warmup ends it.
    """
    warmup = min(warmup_steps, total_steps // 2)
    ramp = 1.0
    if step < warmup:
        done = max(step / warmup, time_progress / WARMUP_TIME_SHARE)
        ramp = 0.001 + (1 - 0.001) * min(1.0, done)
    if kind == "step":
        return ramp * gamma ** (step // max(1, decay_every))
    step_progress = max(0, step - warmup) / max(1, total_steps - warmup)
    progress = min(1.0, max(step_progress, time_progress))
    return ramp * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    clock: TrainingClock,
    kind: str = "cosine",
    decay_every: int = 0,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step, following :func:`schedule_factor` with the clock's
    time progress (none without a budget). Its state (the step count) resumes with ``load_state_dict``."""
    total_steps = max(1, total_steps)

    def factor(step: int) -> float:
        return schedule_factor(step, total_steps, warmup_steps, clock.progress(), kind, decay_every, gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
