"""Entries in a Redis the replicas share (`cache.backend: redis`): one key per entry,
`{key_prefix}<cache key>`, written with SET ... PX (Redis expires it at its time to live) and
read with GET, each one round trip bounded by `redis_timeout`. What Redis evicts under its own
`maxmemory` policy is Redis's to report. After a failed round trip Redis is not asked again for
DOWN_FOR seconds: lookups meanwhile are misses at once (CacheStoreError) instead of each waiting
out the timeout.

Near copies: an entry this process wrote or read is also kept here, decoded, for `near_ttl`
seconds (a MemoryStore bounded by `max_bytes`), so a repeated hit on this replica asks Redis
nothing. A near copy is the entry Redis held, with its stored time, so its age is true and the
policy never serves it past its time to live; what it may miss is a refresh (`no-cache`) another
replica made in the last `near_ttl` seconds. `near_ttl: 0` asks Redis on every lookup.
Uses redis-py's asyncio client; no grpc.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from hapaxd.admission.redis_store import connect
from hapaxd.cache import entries
from hapaxd.cache.entries import Entry
from hapaxd.cache.memory_store import MemoryStore
from hapaxd.cache.store import CacheStoreError
from hapaxd.config import CacheSettings

DOWN_FOR = 1.0


class RedisCacheStore:
    name = "redis"
    remote = True

    def __init__(
        self,
        settings: CacheSettings,
        *,
        on_evict: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = settings.redis_timeout
        self._client = connect(settings, decode_responses=False)  # entries are bytes
        self._prefix = settings.key_prefix
        self._clock = clock
        self._down_until = 0.0
        self._near_ttl = settings.near_ttl
        self._near = MemoryStore(settings.max_bytes, on_evict=on_evict, clock=clock)

    @property
    def held(self) -> int:
        """The bytes of the near copies (the entries themselves are in Redis)."""
        return self._near.held

    def find(self, key: str) -> Entry | None:
        """The near copy of the entry, if this process keeps one."""
        return self._near.find(key)

    async def get(self, key: str) -> Entry | None:
        near = self._near.find(key)
        if near is not None:
            return near
        found = await self._ask(self._client.get(self._prefix + key))
        if not isinstance(found, bytes):
            return None
        entry = entries.decode(found)  # EntryError: the policy counts a damaged entry
        self._near.keep(key, entry, len(found), self._near_ttl)
        return entry

    async def put(self, key: str, entry: Entry, data: bytes, ttl: float) -> None:
        self._near.forget(key)
        await self._ask(self._client.set(self._prefix + key, data, px=max(1, int(ttl * 1000))))
        self._near.keep(key, entry, len(data), min(ttl, self._near_ttl))

    async def delete(self, key: str) -> None:
        self._near.forget(key)
        await self._ask(self._client.delete(self._prefix + key))

    async def _ask(self, command: object) -> object:
        if self._clock() < self._down_until:
            close = getattr(command, "close", None)
            if close is not None:
                close()  # the coroutine was never awaited
            raise CacheStoreError("not asked: unreachable moments ago")
        try:
            async with asyncio.timeout(self._timeout):
                return await command  # type: ignore[misc]
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = self._clock() + DOWN_FOR
            raise CacheStoreError(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None

    async def aclose(self) -> None:
        await self._near.aclose()
        await self._client.aclose()
