"""The retry policy on its own: when to wait and try the same provider again, and for how long."""

from __future__ import annotations

import random

import pytest

from hapaxd.config import RetrySettings
from hapaxd.core.retry import RetryPolicy


def policy(**settings: float) -> RetryPolicy:
    return RetryPolicy(RetrySettings(**settings), random.Random(3))  # type: ignore[arg-type]


def test_backoff_doubles_within_equal_jitter_and_stops_at_the_cap() -> None:
    p = policy(max_attempts=10, initial_backoff=1, max_backoff=5, multiplier=2)
    for failed, base in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        delay = p.delay(failed, None, remaining=100)
        assert delay is not None and base / 2 <= delay <= base, (failed, delay)


def test_no_attempts_left_means_fail_over() -> None:
    p = policy(max_attempts=2)
    assert p.delay(1, None, remaining=100) is not None
    assert p.delay(2, None, remaining=100) is None


def test_retry_after_is_the_wait_up_to_its_cap() -> None:
    p = policy(max_attempts=3, max_retry_after=10)
    assert p.delay(1, 7.5, remaining=100) == 7.5
    assert p.delay(1, 10.5, remaining=100) is None


@pytest.mark.parametrize("retry_after", [None, 3.0])
def test_a_wait_that_does_not_fit_the_deadline_fails_over(retry_after: float | None) -> None:
    p = policy(max_attempts=3, initial_backoff=4, max_backoff=4)
    assert p.delay(1, retry_after, remaining=1.0) is None
