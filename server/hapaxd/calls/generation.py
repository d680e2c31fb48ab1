"""One generation of everything a call takes from the settings: the route table, the upstreams,
the router and the deduplicator, the key ring, the rate limiter (its store), the prices
(calls/charges.py), the budgets (their spend is the gateway's, kept across reloads) and the
response cache's policy (its store is the gateway's, kept alike). A
reload builds a new generation and swaps it in whole; a call takes the generation current when
it begins and keeps it to its end (`async with generations.use() as generation`), so calls in
flight finish on the settings they started with: their key checked against that ring, their
ticket settled on the store that admitted them. A retired generation runs its `on_idle` once its
last call has left: closing the adapters of providers the new one no longer has, and its store
when the new one has another.

Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import TracebackType

from hapaxd.admission.budgets import Budgets
from hapaxd.admission.keys import KeyRing
from hapaxd.admission.limits import Limiter
from hapaxd.cache.policy import ResponseCache
from hapaxd.calls.charges import Charges
from hapaxd.config import Settings
from hapaxd.core.dedup import Deduplicator
from hapaxd.core.router import Router
from hapaxd.core.routes import RouteTable
from hapaxd.core.upstream import Upstream


@dataclasses.dataclass(eq=False)
class Generation:
    settings: Settings
    routes: RouteTable
    upstreams: list[Upstream]
    router: Router
    dedup: Deduplicator
    limiter: Limiter
    charges: Charges
    budgets: Budgets
    cache: ResponseCache
    keys: KeyRing | None = None  # None: auth is off
    number: int = 1
    calls: int = 0  # calls in flight that began on this generation
    retired: bool = False
    on_idle: Callable[[], None] | None = None

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.leave()

    def leave(self) -> None:
        self.calls -= 1
        if self.retired and self.calls == 0:
            self._idle()

    def retire(self, on_idle: Callable[[], None]) -> None:
        """No new call will begin here; `on_idle` runs once the last one in flight has left."""
        self.retired, self.on_idle = True, on_idle
        if self.calls == 0:
            self._idle()

    def _idle(self) -> None:
        on_idle, self.on_idle = self.on_idle, None
        if on_idle is not None:
            on_idle()


class Generations:
    """The current generation, swapped whole by a reload."""

    def __init__(self, first: Generation) -> None:
        self.current = first

    def use(self) -> Generation:
        """The generation a call begins on, as an async context manager the call leaves by:
        `async with generations.use() as generation: ...`."""
        generation = self.current
        generation.calls += 1
        return generation

    def swap(self, new: Generation, on_old_idle: Callable[[], None]) -> Generation:
        old, self.current = self.current, new
        new.number = old.number + 1
        old.retire(on_old_idle)
        return old
