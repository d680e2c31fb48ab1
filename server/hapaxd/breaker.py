"""A three-state circuit breaker per provider, on an injected clock (gobreaker's semantics, with
Hapax's circuit_breaker keys).

Closed: counts outcomes; opens after `failure_threshold` consecutive failures, or when the failure
ratio over the rolling `interval` reaches `failure_ratio` with at least `min_requests` seen.
Open: refuses everything until `timeout` has passed, then half-open.
Half-open: lets `max_requests` trials through; that many successes close it, one failure opens it.
Callers must end every allowed call with success(), failure() or release() (no verdict: a caller
fault or a cancellation). Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable

from hapaxd.config import BreakerSettings


class State(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[State], None] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state = State.CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._window: collections.deque[tuple[float, bool]] = collections.deque()
        self._trials_in_flight = 0
        self._trial_successes = 0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self._settings.timeout:
            self._move(State.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call go to the provider now? In half-open this takes one of the trial places."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN:
            if self._trials_in_flight + self._trial_successes < self._settings.max_requests:
                self._trials_in_flight += 1
                return True
        return False

    def success(self) -> None:
        if self._state is State.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._trial_successes += 1
            if self._trial_successes >= self._settings.max_requests:
                self._move(State.CLOSED)
            return
        if self._state is State.CLOSED:
            self._consecutive_failures = 0
            self._record(ok=True)

    def failure(self) -> None:
        if self._state is State.HALF_OPEN:
            self._move(State.OPEN)
            return
        if self._state is not State.CLOSED:
            return
        self._consecutive_failures += 1
        self._record(ok=False)
        if self._consecutive_failures >= self._settings.failure_threshold or self._ratio_tripped():
            self._move(State.OPEN)

    def release(self) -> None:
        """An allowed call ended with no verdict on the provider."""
        if self._state is State.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)

    def _record(self, ok: bool) -> None:
        now = self._clock()
        self._window.append((now, ok))
        horizon = now - self._settings.interval
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _ratio_tripped(self) -> bool:
        seen = len(self._window)
        if seen < self._settings.min_requests:
            return False
        failed = sum(1 for _, ok in self._window if not ok)
        return failed / seen >= self._settings.failure_ratio

    def _move(self, state: State) -> None:
        if state is self._state:
            return
        self._state = state
        self._consecutive_failures = 0
        self._trials_in_flight = 0
        self._trial_successes = 0
        self._window.clear()
        if state is State.OPEN:
            self._opened_at = self._clock()
        if self._on_transition is not None:
            self._on_transition(state)
