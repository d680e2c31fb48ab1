"""When to try the same provider again, and after how long: the retry policy, pure.

The router asks `delay()` after a failed attempt whose failure class is retryable
(core/failures.py); None means fail over to the next provider instead. Plain Python.
"""

from __future__ import annotations

import random

from hapaxd.config import RetrySettings


class RetryPolicy:
    """`router.retry` settings: `max_attempts` per provider (counting the first), exponential
    backoff with jitter between `initial_backoff` and `max_backoff`, and an upstream's own
    Retry-After honoured up to `max_retry_after`."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.max_attempts = settings.max_attempts
        self._rng = rng or random.Random()

    def delay(self, failed: int, retry_after: float | None, remaining: float) -> float | None:
        """Seconds to wait before trying the same provider again after its `failed`-th failed
        attempt (1 for the first), or None to fail over instead: no attempts left, a Retry-After
        longer than `max_retry_after`, or a wait that would not leave time in the `remaining`
        deadline budget.

        Without Retry-After the wait is drawn from [base/2, base], base =
        min(max_backoff, initial_backoff * multiplier ** (failed - 1)): "equal jitter", so
        waits grow and callers that failed together do not retry together.
        """
        if failed >= self.max_attempts:
            return None
        s = self.settings
        if retry_after is not None:
            if retry_after > s.max_retry_after:
                return None
            delay = retry_after
        else:
            base = min(s.max_backoff, s.initial_backoff * s.multiplier ** (failed - 1))
            delay = base / 2 + self._rng.uniform(0, base / 2)
        return delay if delay < remaining else None
