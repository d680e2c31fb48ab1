"""Singleflight: identical requests in flight at the same time share one call.

`Group.do` shares a coroutine's result (or its exception) among every waiter; `StreamGroup.join`
shares a stream, replaying what was already produced to a late joiner. One waiter leaving does
not stop the call; when the last one leaves, the call is cancelled. The key is dropped when the
call ends. Plain asyncio: no grpc, no HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


class Group(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    def running(self, key: Hashable) -> bool:
        return key in self._flights

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result of fn(), run once per key at a time; `shared` is True for joiners."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(fn()))
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._ended, key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
                self._drop(key, flight)

    def _ended(self, key: Hashable, flight: _Flight[T], _task: object) -> None:
        self._drop(key, flight)

    def _drop(self, key: Hashable, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # retrieved, so a failure nobody awaited is not logged


class _Broadcast(Generic[T]):
    """One producer's items, kept so that every subscriber reads them all from the start."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.done = False
        self.subscribers = 0
        self._changed = asyncio.Condition()
        self.task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                async with self._changed:
                    self.items.append(item)
                    self._changed.notify_all()
        except asyncio.CancelledError:
            self.error = asyncio.CancelledError()
            raise
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()  # type: ignore[attr-defined]
            self.done = True
            async with self._changed:
                self._changed.notify_all()

    def _has_more(self, index: int) -> bool:
        return index < len(self.items) or self.done

    async def read(self) -> AsyncIterator[T]:
        index = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._has_more, index))
                batch = self.items[index:]
            for item in batch:
                yield item
            index += len(batch)
            if self.done and index >= len(self.items):
                if self.error is not None:
                    raise self.error
                return


class StreamGroup(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, _Broadcast[T]] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    @contextlib.asynccontextmanager
    async def join(
        self, key: Hashable, start: Callable[[], AsyncIterator[T]]
    ) -> AsyncIterator[tuple[AsyncIterator[T], bool]]:
        """(items, shared): every item of the one stream for `key`, from its first."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Broadcast(start())
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._ended, key, flight))
        flight.subscribers += 1
        try:
            yield flight.read(), shared
        finally:
            flight.subscribers -= 1
            if flight.subscribers == 0:
                flight.task.cancel()  # no-op when it already ended
                self._drop(key, flight)

    def _ended(self, key: Hashable, flight: _Broadcast[T], _task: object) -> None:
        self._drop(key, flight)

    def _drop(self, key: Hashable, flight: _Broadcast[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
