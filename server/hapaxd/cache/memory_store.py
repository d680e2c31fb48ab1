"""Entries in this process (`cache.backend: local`): a dict in least-recently-used order,
bounded by the bytes of the entries it holds (`cache.max_bytes`). Storing past the bound evicts
the least recently used entries first; an entry past its time to live is dropped when it is
next looked up (or evicted sooner, if it is the least recently used). Plain Python.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryStore:
    name = "local"

    def __init__(
        self,
        max_bytes: int,
        *,
        on_evict: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        data, expires = found
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return data

    async def put(self, key: str, data: bytes, ttl: float) -> None:
        if len(data) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (data, self._clock() + ttl)
        self.held += len(data)
        evicted = 0
        while self.held > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            evicted += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted, self.held)

    async def delete(self, key: str) -> None:
        if key in self._entries:
            self._drop(key)

    def _drop(self, key: str) -> None:
        data, _ = self._entries.pop(key)
        self.held -= len(data)

    async def aclose(self) -> None:
        self._entries.clear()
        self.held = 0
