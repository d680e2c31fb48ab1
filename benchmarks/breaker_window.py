"""Does the circuit breaker's failure-ratio window cost the same at any load? Time per failure()
with a full window of 300, 3,000 and 30,000 outcomes (30,000 = 500 calls/s over the default 60 s
interval), for the breaker in server/ (a fixed ring of counted slots) against the deque it
replaced (one entry per outcome, summed on every failure), re-implemented here as the reference.

Pure Python on a fake clock, no processes or sockets: a few seconds (`--quick`: under one).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from hapaxd.config import BreakerSettings
from hapaxd.core.breaker import WINDOW_BUCKETS, CircuitBreaker, State

INTERVAL = 60.0
BATCH = 100  # failures timed together, then as many successes untimed, so the mix stays mixed
# The ratio rule on (so the window is used) but never tripped: the window always holds successes.
SETTINGS = BreakerSettings(
    interval=INTERVAL, failure_ratio=1.0, min_requests=10, failure_threshold=10**9
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Breaker(Protocol):
    @property
    def state(self) -> State: ...
    def success(self) -> None: ...
    def failure(self) -> None: ...


class DequeBreaker:
    """The closed-state path of the breaker before the ring: a deque entry per outcome over the
    whole interval, trimmed on each outcome and summed on each failure."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._ratio = 1.0 if settings.failure_ratio is None else settings.failure_ratio
        self._clock = clock
        self._state = State.CLOSED
        self._consecutive_failures = 0
        self._window: collections.deque[tuple[float, bool]] = collections.deque()

    @property
    def state(self) -> State:
        return self._state

    def success(self) -> None:
        if self._state is State.CLOSED:
            self._consecutive_failures = 0
            self._record(ok=True)

    def failure(self) -> None:
        if self._state is not State.CLOSED:
            return
        self._consecutive_failures += 1
        self._record(ok=False)
        if self._consecutive_failures >= self._settings.failure_threshold or self._ratio_tripped():
            self._state = State.OPEN
            self._window.clear()

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
        return failed / seen >= self._ratio


IMPLEMENTATIONS: dict[str, Callable[[Clock], Breaker]] = {
    "deque (old)": lambda clock: DequeBreaker(SETTINGS, clock),
    "ring (new)": lambda clock: CircuitBreaker(SETTINGS, clock=clock),
}


@dataclasses.dataclass
class Config:
    sizes: tuple[int, ...] = (300, 3_000, 30_000)
    rounds: int = 5
    duration: float = 0.15  # seconds of timed failures per implementation, size and round

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=2, duration=0.03)


def measure(make: Callable[[Clock], Breaker], size: int, duration: float) -> float:
    """Microseconds per failure() with `size` outcomes in the window, the clock moving so that
    the window holds `size` outcomes throughout (each outcome pushes the oldest out)."""
    clock = Clock()
    breaker = make(clock)
    step = INTERVAL / size
    for _ in range(size):  # successes: cheap to add for both, and the sum walks them all alike
        clock.now += step
        breaker.success()
    timed, failures = 0.0, 0
    perf = time.perf_counter
    while timed < duration:
        began = perf()
        for _ in range(BATCH):
            clock.now += step
            breaker.failure()
        timed += perf() - began
        failures += BATCH
        for _ in range(BATCH):
            clock.now += step
            breaker.success()
    assert breaker.state is State.CLOSED, "the ratio rule tripped: the figures would be wrong"
    return timed / failures * 1e6


def run(config: Config) -> dict[str, Any]:
    """Alternating rounds; each figure is the median over rounds."""
    names = list(IMPLEMENTATIONS)
    samples: dict[tuple[str, int], list[float]] = {(n, s): [] for n in names for s in config.sizes}
    for r in range(config.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for size in config.sizes:
            for name in order:
                samples[name, size].append(measure(IMPLEMENTATIONS[name], size, config.duration))
    cells = []
    for size in config.sizes:
        old = statistics.median(samples[names[0], size])
        new = statistics.median(samples[names[1], size])
        cells.append(
            {
                "outcomes_in_window": size,
                "old_us_per_failure": old,
                "new_us_per_failure": new,
                "old_over_new": old / new,
                "rounds": {n: samples[n, size] for n in names},
            }
        )
    return {
        "interval_s": INTERVAL,
        "buckets": WINDOW_BUCKETS,
        "rounds": config.rounds,
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        "Circuit breaker window: time per failure() with a full window "
        f"(interval {result['interval_s']:.0f} s, ring of {result['buckets']} slots; "
        f"median of {result['rounds']} alternating rounds)",
        "",
        f"{'outcomes in window':>18}  {'deque (old) us':>14}  {'ring (new) us':>13}"
        f"  {'old/new':>8}",
    ]
    for cell in result["cells"]:
        lines.append(
            f"{cell['outcomes_in_window']:>18,}  {cell['old_us_per_failure']:>14.2f}  "
            f"{cell['new_us_per_failure']:>13.2f}  {cell['old_over_new']:>7.0f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.breaker_window", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(Config.quick() if args.quick else Config())
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"breaker_window": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
