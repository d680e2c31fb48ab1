"""The circuit breaker on an injected clock: no test sleeps."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hapaxd.config import BreakerSettings
from hapaxd.core.breaker import WINDOW_BUCKETS, CircuitBreaker, RollingWindow, State
from tests.support.clock import Clock


def breaker(
    clock: Clock, transitions: list[State] | None = None, **settings: float
) -> CircuitBreaker:
    return CircuitBreaker(
        BreakerSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
        listeners=() if transitions is None else [lambda e: transitions.append(State(e.state))],
    )


def test_opens_after_the_consecutive_failure_threshold_and_refuses_while_open() -> None:
    clock, moves = Clock(), []
    b = breaker(clock, moves, failure_threshold=3, timeout=30)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state is State.CLOSED
    assert b.allow()
    b.failure()
    assert b.state is State.OPEN
    assert moves == [State.OPEN]
    clock.now += 29.9
    assert not b.allow()


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(Clock(), failure_threshold=2)
    b.failure()
    b.success()
    b.failure()
    assert b.state is State.CLOSED


def test_half_opens_after_timeout_lets_max_requests_trials_and_closes_on_their_success() -> None:
    clock, moves = Clock(), []
    b = breaker(clock, moves, failure_threshold=1, timeout=10, max_requests=2)
    b.failure()
    clock.now += 10
    assert b.state is State.HALF_OPEN
    assert b.allow() and b.allow()
    assert not b.allow(), "only max_requests trials pass while half-open"
    b.success()
    assert b.state is State.HALF_OPEN
    b.success()
    assert b.state is State.CLOSED
    assert moves == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_failed_trial_opens_again_for_a_full_timeout() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=1, timeout=10)
    b.failure()
    clock.now += 10
    assert b.allow()
    b.failure()
    assert b.state is State.OPEN
    clock.now += 9
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_a_released_trial_frees_its_place() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=1, timeout=1, max_requests=1)
    b.failure()
    clock.now += 1
    assert b.allow()
    assert not b.allow()
    b.release()  # a caller fault or cancellation: no verdict on the provider
    assert b.state is State.HALF_OPEN
    assert b.allow()


def test_failure_ratio_over_the_interval_opens_with_enough_requests() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=100, failure_ratio=0.5, min_requests=4, interval=60)
    for ok in (True, False, True):
        b.success() if ok else b.failure()
    assert b.state is State.CLOSED, "three requests are below min_requests"
    b.failure()
    assert b.state is State.OPEN


def test_outcomes_older_than_the_interval_do_not_count() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=100, failure_ratio=0.5, min_requests=4, interval=60)
    b.failure()
    b.success()
    b.failure()
    clock.now += 61
    b.success()
    b.success()
    b.failure()
    assert b.state is State.CLOSED


@pytest.mark.parametrize("threshold", [1, 5])
def test_threshold_is_configurable(threshold: int) -> None:
    b = breaker(Clock(), failure_threshold=threshold)
    for _ in range(threshold - 1):
        b.failure()
    assert b.state is State.CLOSED
    b.failure()
    assert b.state is State.OPEN


def test_the_ratio_rule_is_off_by_default_so_only_the_threshold_opens() -> None:
    assert BreakerSettings().failure_ratio is None
    b = breaker(Clock(), failure_threshold=20, min_requests=10)
    for _ in range(19):
        b.failure()
    assert b.state is State.CLOSED, "19 straight failures, below failure_threshold 20"
    b.failure()
    assert b.state is State.OPEN


def test_a_ratio_of_one_when_set_opens_after_min_requests_straight_failures() -> None:
    b = breaker(Clock(), failure_threshold=20, failure_ratio=1.0, min_requests=10)
    for _ in range(9):
        b.failure()
    assert b.state is State.CLOSED
    b.failure()
    assert b.state is State.OPEN


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5])
def test_failure_ratio_must_be_above_zero_and_at_most_one(ratio: float) -> None:
    with pytest.raises(ValidationError):
        BreakerSettings(failure_ratio=ratio)


def test_failure_ratio_opens_when_the_share_of_failures_reaches_it() -> None:
    b = breaker(Clock(), failure_threshold=100, failure_ratio=0.5, min_requests=10)
    for _ in range(6):
        b.success()
    for _ in range(5):
        b.failure()
    assert b.state is State.CLOSED, "5 of 11 failed: below 0.5"
    b.failure()
    assert b.state is State.OPEN, "6 of 12 failed: 0.5"


def test_failure_ratio_counts_only_outcomes_within_the_interval() -> None:
    clock = Clock()
    clock.now = 1020.0  # the start of a 6 s slot (interval 60 s / 10 slots)
    b = breaker(clock, failure_threshold=100, failure_ratio=0.5, min_requests=4, interval=60)
    b.failure()
    b.failure()
    b.success()
    clock.now += 59.9
    b.failure()
    assert b.state is State.OPEN, "3 of 4 failed within 60 s"

    clock.now = 1020.0
    b = breaker(clock, failure_threshold=100, failure_ratio=0.5, min_requests=4, interval=60)
    b.failure()
    b.failure()
    b.success()
    clock.now += 60
    b.failure()
    assert b.state is State.CLOSED, "the first three are 60 s old: one outcome seen"


def test_the_window_forgets_outcomes_older_than_the_interval() -> None:
    window = RollingWindow(60, buckets=10)
    window.add(1020.0, ok=False)
    window.add(1079.9, ok=True)
    assert (window.seen, window.failed) == (2, 1)
    window.add(1080.0, ok=True)
    assert (window.seen, window.failed) == (2, 0)
    window.add(5000.0, ok=True)
    assert (window.seen, window.failed) == (1, 0)


def test_an_outcome_counts_for_at_least_the_interval_less_one_slot() -> None:
    window = RollingWindow(60, buckets=10)  # slots of 6 s: 1020 <= t < 1026 is one slot
    window.add(1025.9, ok=False)
    window.add(1079.9, ok=True)
    assert window.failed == 1, "54 s old: still counted"
    window.add(1080.0, ok=True)
    assert window.failed == 0, "54.1 s old: left with its slot (granularity 6 s)"


def test_the_window_memory_does_not_grow_with_the_number_of_outcomes() -> None:
    window = RollingWindow(60)
    for i in range(10):
        window.add(1020.0 + i, ok=i % 2 == 0)
    assert window.buckets == WINDOW_BUCKETS
    for i in range(100_000):
        window.add(1020.0 + i * 59.9 / 100_000, ok=i % 3 != 0)
    assert window.buckets == WINDOW_BUCKETS
    assert window.seen == 100_010
    assert window.failed == 5 + 33_334
