"""An Events listener that counts what the gateway reports, and lets a test await a count."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable


class Recorder:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, tuple[object, ...]]] = []
        self._changed = asyncio.Condition()

    def _note(self, name: str, *args: object) -> None:
        self.counts[name] += 1
        self.log.append((name, args))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    def attempt_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self._note("attempt", provider, model, outcome)

    def first_token(self, provider: str, model: str, seconds: float) -> None:
        self._note("first_token", provider, model)

    def tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        self._note("tokens", provider, model, prompt, completion)

    def retry(self, provider: str) -> None:
        self._note("retry", provider)

    def failover(self, from_provider: str, to_provider: str) -> None:
        self._note("failover", from_provider, to_provider)

    def breaker_transition(self, provider: str, to_state: str) -> None:
        self._note("breaker", provider, to_state)

    def health_checked(self, provider: str, ok: bool, seconds: float) -> None:
        self._note("health_checked", provider, ok)

    def provider_health(self, provider: str, healthy: bool) -> None:
        self._note("provider_health", provider, healthy)

    def deduplicated(self, method: str) -> None:
        self._note("deduplicated", method)
