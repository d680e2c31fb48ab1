"""Where entries live: the CacheStore protocol, and which one `cache.backend` builds (the
in-process MemoryStore, or RedisCacheStore, imported only when configured). A store failure is
a CacheStoreError: the call goes on as a miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hapaxd.config import CacheSettings


class CacheStoreError(Exception):
    """The store could not be asked (Redis down or slow); the call goes on as a miss."""


class CacheStore(Protocol):
    name: str
    held: int  # bytes the store holds in this process (0: it is elsewhere)

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, data: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


def build_cache_store(
    settings: CacheSettings, on_evict: Callable[[int, int], None] | None = None
) -> CacheStore:
    if settings.backend == "redis":
        from hapaxd.cache.redis_store import RedisCacheStore

        return RedisCacheStore(settings)
    from hapaxd.cache.memory_store import MemoryStore

    return MemoryStore(settings.max_bytes, on_evict=on_evict)


STORE_FIELDS = ("backend", "redis_url", "redis_password", "redis_timeout", "key_prefix")


def same_cache_store(old: CacheSettings, new: CacheSettings) -> bool:
    """Whether `new` would build the store `old` built (a reload keeps its entries)."""
    if any(getattr(old, f) != getattr(new, f) for f in STORE_FIELDS):
        return False
    return new.backend == "redis" or old.max_bytes == new.max_bytes
