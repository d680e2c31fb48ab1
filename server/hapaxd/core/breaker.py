"""A three-state circuit breaker per provider, on an injected clock (gobreaker's semantics, with
Hapax's circuit_breaker keys).

Closed: counts outcomes; opens after `failure_threshold` consecutive failures or, when
`failure_ratio` is set, when the share of failures over the rolling `interval` reaches it with at
least `min_requests` seen (unset, that rule is off).
Open: refuses everything until `timeout` has passed, then half-open.
Half-open: lets `max_requests` trials through; that many successes close it, one failure opens it.
Callers must end every allowed call with success(), failure() or release() (no verdict: a caller
fault or a cancellation). Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

from hapaxd.config import BreakerSettings
from hapaxd.core.events import BreakerChanged, Listeners, emit

WINDOW_BUCKETS = 10


class State(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class RollingWindow:
    """Outcomes seen and failed over the last `interval`, counted in a fixed ring of `buckets`
    slots, each `interval / buckets` wide, with running totals: constant time and memory per
    outcome whatever the load. An outcome leaves with its whole slot, so it counts for less than
    `interval` and for at least `interval - interval / buckets`."""

    def __init__(self, interval: float, buckets: int = WINDOW_BUCKETS) -> None:
        if buckets < 1:
            raise ValueError("buckets must be at least 1")
        self._width = interval / buckets
        self._seen = [0] * buckets
        self._failed = [0] * buckets
        self._tick = 0  # the slot of the last add(), as floor(time / width); its ring index % n
        self._total_seen = 0
        self._total_failed = 0

    @property
    def buckets(self) -> int:
        """Slots held: fixed at construction, however many outcomes were added."""
        return len(self._seen)

    @property
    def seen(self) -> int:
        """Outcomes in the window as of the last add()."""
        return self._total_seen

    @property
    def failed(self) -> int:
        """Failures in the window as of the last add()."""
        return self._total_failed

    def add(self, now: float, ok: bool) -> None:
        slot = self._advance(now)
        self._seen[slot] += 1
        self._total_seen += 1
        if not ok:
            self._failed[slot] += 1
            self._total_failed += 1

    def clear(self) -> None:
        for i in range(len(self._seen)):
            self._seen[i] = self._failed[i] = 0
        self._total_seen = self._total_failed = 0

    def _advance(self, now: float) -> int:
        """Empty the slots that time has left behind since the last add(); the index for `now`."""
        n = len(self._seen)
        tick = math.floor(now / self._width)
        steps = tick - self._tick
        if steps >= n:
            self.clear()
        elif steps > 0:
            for passed in range(self._tick + 1, tick + 1):
                i = passed % n
                self._total_seen -= self._seen[i]
                self._total_failed -= self._failed[i]
                self._seen[i] = self._failed[i] = 0
        if steps > 0:
            self._tick = tick
        return self._tick % n  # a clock that stepped back counts in the newest slot


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        listeners: Listeners = (),
    ) -> None:
        """`name` is the provider's, for the BreakerChanged events `listeners` get."""
        self._settings = settings
        self._name = name
        self._clock = clock
        self._listeners = listeners
        self._state = State.CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        # Only the ratio rule reads the window, so with it off nothing is recorded.
        self._window = (
            RollingWindow(settings.interval) if settings.failure_ratio is not None else None
        )
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
            if self._window is not None:
                self._window.add(self._clock(), ok=True)

    def failure(self) -> None:
        if self._state is State.HALF_OPEN:
            self._move(State.OPEN)
            return
        if self._state is not State.CLOSED:
            return
        self._consecutive_failures += 1
        if self._window is not None:
            self._window.add(self._clock(), ok=False)
        if self._consecutive_failures >= self._settings.failure_threshold or self._ratio_tripped():
            self._move(State.OPEN)

    def release(self) -> None:
        """An allowed call ended with no verdict on the provider."""
        if self._state is State.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)

    def _ratio_tripped(self) -> bool:
        ratio, window = self._settings.failure_ratio, self._window
        if ratio is None or window is None or window.seen < self._settings.min_requests:
            return False
        return window.failed / window.seen >= ratio

    def _move(self, state: State) -> None:
        if state is self._state:
            return
        self._state = state
        self._consecutive_failures = 0
        self._trials_in_flight = 0
        self._trial_successes = 0
        if self._window is not None:
            self._window.clear()
        if state is State.OPEN:
            self._opened_at = self._clock()
        emit(self._listeners, BreakerChanged(self._name, state.value))
