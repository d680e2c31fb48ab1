"""The circuit breaker on an injected clock: no test sleeps."""

from __future__ import annotations

import pytest

from hapaxd.breaker import CircuitBreaker, State
from hapaxd.config import BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(
    clock: Clock, transitions: list[State] | None = None, **settings: float
) -> CircuitBreaker:
    return CircuitBreaker(
        BreakerSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
        on_transition=None if transitions is None else transitions.append,
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
