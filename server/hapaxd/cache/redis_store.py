"""Entries in a Redis the replicas share (`cache.backend: redis`): one key per entry,
`{key_prefix}<cache key>`, written with SET ... PX (Redis expires it at its time to live) and
read with GET, each one round trip bounded by `redis_timeout`. What Redis evicts under its own
`maxmemory` policy is Redis's to report. After a failed round trip Redis is not asked again for
DOWN_FOR seconds: lookups meanwhile are misses at once (CacheStoreError) instead of each waiting
out the timeout. Uses redis-py's asyncio client; no grpc.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from hapaxd.admission.redis_store import connect
from hapaxd.cache.store import CacheStoreError
from hapaxd.config import CacheSettings

DOWN_FOR = 1.0


class RedisCacheStore:
    name = "redis"
    held = 0  # the bytes are in Redis, not here

    def __init__(
        self, settings: CacheSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = settings.redis_timeout
        self._client = connect(settings, decode_responses=False)  # entries are bytes
        self._prefix = settings.key_prefix
        self._clock = clock
        self._down_until = 0.0

    async def get(self, key: str) -> bytes | None:
        found = await self._ask(self._client.get(self._prefix + key))
        return found if isinstance(found, bytes) else None

    async def put(self, key: str, data: bytes, ttl: float) -> None:
        await self._ask(self._client.set(self._prefix + key, data, px=max(1, int(ttl * 1000))))

    async def delete(self, key: str) -> None:
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
        await self._client.aclose()
