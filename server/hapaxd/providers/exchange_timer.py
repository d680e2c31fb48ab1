"""One timer for a whole upstream exchange: the wait for the response headers (`first_byte`),
each wait for the next piece of a body (`idle`), and the exchange as a whole (`total`).

`asyncio.timeout` around every read costs an object, a timer handle scheduled and another
cancelled (about 10 us a read, 16 and more a stream). This keeps one handle per exchange and
moves it lazily: a wait only notes when it would expire; the handle, when it fires, either finds
the wait still running past that moment (and cancels the waiting task, which `within` turns into
TimeoutError, as asyncio.timeout does) or re-arms for the wait now running. It is armed at most
`step` ahead (the shortest limit a wait has), so a later, shorter wait needs no new handle: a
fast exchange schedules one handle and cancels it. While no wait runs (the caller is busy with a
piece already read) nothing expires. Plain asyncio.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
NEVER = math.inf


class ExchangeTimer:
    """`await timer.within(limit, awaitable)`: the awaitable's result, or TimeoutError when it
    took longer than `limit` seconds or ran past the exchange's `total`. `close()` (or leaving
    the `with` block) drops the handle; until then one wait at a time."""

    __slots__ = (
        "_armed",
        "_cancelling",
        "_end",
        "_expired",
        "_handle",
        "_loop",
        "_step",
        "_task",
        "_until",
    )

    def __init__(self, total: float | None, step: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._step = step
        self._end = NEVER if total is None else self._loop.time() + total
        self._until = NEVER  # when the running wait expires; NEVER while none runs
        self._armed = NEVER  # when the handle fires
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._expired = False

    def __enter__(self) -> ExchangeTimer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = NEVER

    @property
    def past_total(self) -> bool:
        """The exchange's `total` is spent (what cut the last wait, if one was cut)."""
        return self._loop.time() >= self._end

    async def within(self, limit: float, awaitable: Awaitable[T]) -> T:
        until = min(self._loop.time() + limit, self._end)
        task = asyncio.current_task()
        assert task is not None, "ExchangeTimer.within runs in a task"
        self._task, self._cancelling, self._until = task, task.cancelling(), until
        if until < self._armed:
            self._arm(until)  # min(until, now + step)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= self._cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._until = NEVER

    def _arm(self, until: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when = min(until, self._loop.time() + self._step)
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle, self._armed = None, NEVER
        until = self._until
        if until == NEVER:
            return  # no wait running: the next one arms the handle
        if self._loop.time() < until:
            self._arm(until)
        elif self._task is not None and not self._expired:
            self._expired = True
            self._task.cancel()
