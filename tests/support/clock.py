"""A clock a test moves by hand (`clock.now += 30`), for breakers and anything else that takes a
`clock` callable: no test sleeps to wait for time to pass."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
