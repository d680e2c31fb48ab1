"""Entries in this process (`cache.backend: local`, and the near copies of a Redis store): a
dict in least-recently-used order, bounded by the encoded bytes of the entries it holds
(`cache.max_bytes`). Entries are kept decoded, so a hit decodes nothing. Storing past the bound
evicts the least recently used entries first; an entry past its time to live is dropped when it
is next looked up (or evicted sooner, if it is the least recently used). Plain Python.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from hapaxd.cache.entries import Entry


class MemoryStore:
    name = "local"
    remote = False

    def __init__(
        self,
        max_bytes: int,
        *,
        on_evict: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self._entries: OrderedDict[str, tuple[Entry, int, float]] = OrderedDict()
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, key: str) -> Entry | None:
        """The entry under `key`, if it is here and alive (the least recently used order
        updated); no I/O, no await."""
        found = self._entries.get(key)
        if found is None:
            return None
        entry, _, expires = found
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def keep(self, key: str, entry: Entry, size: int, ttl: float) -> None:
        """Hold `entry` (`size` encoded bytes) for `ttl` seconds, evicting past the bound."""
        if size > self.max_bytes or ttl <= 0:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (entry, size, self._clock() + ttl)
        self.held += size
        evicted = 0
        while self.held > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            evicted += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted, self.held)

    def forget(self, key: str) -> None:
        if key in self._entries:
            self._drop(key)

    async def get(self, key: str) -> Entry | None:
        return self.find(key)

    async def put(self, key: str, entry: Entry, data: bytes, ttl: float) -> None:
        self.keep(key, entry, len(data), ttl)

    async def delete(self, key: str) -> None:
        self.forget(key)

    def _drop(self, key: str) -> None:
        _, size, _ = self._entries.pop(key)
        self.held -= size

    async def aclose(self) -> None:
        self._entries.clear()
        self.held = 0
