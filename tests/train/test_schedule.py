"""The schedule over a time budget: the learning rate reaches its floor when the budget runs out, whatever
the step time, validation time kept in reserve, and a resumed run continues the same schedule."""

from __future__ import annotations

import pytest
import torch

from instaseg.train.schedule import TrainingClock, build_schedule, schedule_factor


class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(
    clock: TrainingClock, fake: FakeTime, step_seconds, total_steps=10_000, warmup=5, validate_every=None
):
    """Step a schedule until the clock says stop; returns the learning rates seen and the steps taken."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, total_steps, warmup, clock)
    rates, step = [], 0
    while not clock.past_deadline() and step < total_steps:
        fake.t += step_seconds(step)
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
        step += 1
        if validate_every and step % validate_every == 0:
            fake.t += 3.0  # a validation and checkpoint of 3 s
            clock.reserve(3.0)
    return rates, step


@pytest.mark.parametrize("step_seconds", [lambda s: 0.5, lambda s: 0.2 if s % 50 < 25 else 1.5])
def test_floor_at_the_end_of_the_budget_for_any_speed(step_seconds):
    fake = FakeTime()
    clock = TrainingClock(minutes=2, now=fake)
    rates, steps = run(clock, fake, step_seconds, validate_every=40)
    assert rates[-1] < 0.01 and max(rates) > 0.9  # warmed up to the peak, decayed to the floor
    used = clock.used()
    assert 120 - 3 * 1.25 - 1.5 <= used <= 120  # stopped so that the final 3 s validation still fits
    assert all(b <= a + 1e-9 for a, b in zip(rates[10:], rates[11:], strict=False))  # monotone after warmup


def test_epochs_are_an_upper_bound():
    fake = FakeTime()
    rates, steps = run(TrainingClock(minutes=60, now=fake), fake, lambda s: 0.1, total_steps=200)
    assert steps == 200 and rates[-1] < 0.01  # the steps ran out first: floor there


def test_resume_continues_the_same_schedule():
    fake = FakeTime()
    clock = TrainingClock(minutes=1, now=fake)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, 10_000, 5, clock)
    for _ in range(100):
        fake.t += 0.2
        optimizer.step()
        schedule.step()
    before = optimizer.param_groups[0]["lr"]
    state, used = schedule.state_dict(), clock.used()
    again = TrainingClock(minutes=1, used_before=used, now=fake)  # a new process: its own wall clock
    optimizer2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule2 = build_schedule(optimizer2, 10_000, 5, again)
    schedule2.load_state_dict(state)
    assert again.progress() == pytest.approx(clock.progress())
    assert schedule_factor(100, 10_000, 5, again.progress()) == pytest.approx(before, rel=1e-6)


def test_without_budget_the_schedule_is_over_steps():
    assert schedule_factor(0, 100, 10, 0.0) == pytest.approx(0.001)
    assert schedule_factor(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert schedule_factor(100, 100, 10, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert not TrainingClock(0).limited and TrainingClock(0).progress() == 0.0


def test_a_budget_shorter_than_the_warmup_still_ends_at_the_floor():
    fake = FakeTime()
    clock = TrainingClock(minutes=0.5, now=fake)
    rates, steps = run(clock, fake, lambda s: 1.0, warmup=100)  # 30 s budget, 100 warmup steps of 1 s
    assert steps < 100 and rates[-1] < 0.01 * max(rates)


def test_the_warmup_takes_a_small_share_of_a_budget():
    fake = FakeTime()
    clock = TrainingClock(minutes=1, now=fake)
    rates, steps = run(clock, fake, lambda s: 1.0, warmup=100)  # 100 warmup steps of 1 s in a 60 s budget
    assert max(rates[:5]) > 0.9  # warmed up after ~3 s (5 % of the time), not after 100 steps
