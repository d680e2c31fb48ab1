"""A listener that keeps every domain event the gateway reports, and lets a test await a count."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from hapaxd.core.events import Event

E = TypeVar("E")


class Recorder:
    """Pass as `App(listeners=[recorder])` (or to a Router, breaker, monitor, deduplicator)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def count(self, kind: type[Event]) -> int:
        return sum(1 for e in self.events if isinstance(e, kind))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)
