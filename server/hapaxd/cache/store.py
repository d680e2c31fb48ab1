"""Where entries live: the CacheStore protocol, and which one `cache.backend` builds (the
in-process MemoryStore, or RedisCacheStore, imported only when configured). A store hands back
decoded entries and is given each entry with its encoded bytes (encoded once, by the policy). A
store failure is a CacheStoreError, an entry that does not decode an EntryError: either way the
call goes on as a miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hapaxd.cache.entries import Entry
from hapaxd.config import CacheSettings


class CacheStoreError(Exception):
    """The store could not be asked (Redis down or slow); the call goes on as a miss."""


class CacheStore(Protocol):
    name: str

    @property
    def held(self) -> int:
        """Bytes the store holds in this process."""
        ...

    remote: bool  # whether `get` may find what `find` did not

    def find(self, key: str) -> Entry | None:
        """The entry under `key` if this process holds it (no I/O)."""
        ...

    async def get(self, key: str) -> Entry | None: ...

    async def put(self, key: str, entry: Entry, data: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


def build_cache_store(
    settings: CacheSettings, on_evict: Callable[[int, int], None] | None = None
) -> CacheStore:
    if settings.backend == "redis":
        from hapaxd.cache.redis_store import RedisCacheStore

        return RedisCacheStore(settings, on_evict=on_evict)
    from hapaxd.cache.memory_store import MemoryStore

    return MemoryStore(settings.max_bytes, on_evict=on_evict)


STORE_FIELDS = (
    "backend",
    "redis_url",
    "redis_password",
    "redis_timeout",
    "key_prefix",
    "max_bytes",
    "near_ttl",
)


def same_cache_store(old: CacheSettings, new: CacheSettings) -> bool:
    """Whether `new` would build the store `old` built (a reload keeps its entries)."""
    return all(getattr(old, f) == getattr(new, f) for f in STORE_FIELDS)
