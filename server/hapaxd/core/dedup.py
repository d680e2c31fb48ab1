"""Deduplication: identical requests in flight share one upstream call (singleflight), within
the policy `dedup:` sets. Answers to joiners carry `Route.shared`. Plain Python: no grpc, no HTTP
client.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Hashable

from hapaxd.config import DedupSettings, Settings
from hapaxd.core.events import Deduplicated, Listeners, emit
from hapaxd.core.router import Router, StreamItem
from hapaxd.core.singleflight import Group, StreamGroup
from hapaxd.core.types import (
    AnyRequest,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Route,
)


def dedup_key(policy: DedupSettings, request: AnyRequest, caller: str) -> Hashable | None:
    """The singleflight key under which `request` may share an upstream call, or None when it
    must have its own.

    `caller` is the digest of the caller's credential, empty when anonymous. Callers share only
    with themselves, and an anonymous caller with nobody, unless `share_across_callers`. Sampled
    requests are independent draws, so they share only when `sampled` says so.
    """
    if not (policy.sampled or request.is_deterministic()):
        return None
    if policy.share_across_callers:
        return ("", request.shape_key())
    if not caller:
        return None  # an empty identity is everyone's: it cannot tell two callers apart
    return (caller, request.shape_key())


async def _marked_shared(items: AsyncIterator[StreamItem]) -> AsyncGenerator[StreamItem, None]:
    async for item in items:
        yield dataclasses.replace(item, shared=True) if isinstance(item, Route) else item


class Deduplicator:
    """The router behind singleflight groups, one for unary calls and one for streams."""

    def __init__(self, settings: Settings, router: Router, *, listeners: Listeners = ()) -> None:
        self.policy = settings.dedup
        self.router = router
        self.listeners = listeners
        self._off = {m for m, s in settings.models.items() if not s.dedup}
        self._unary: Group[tuple[Completion, Route]] = Group()
        self._embeds: Group[tuple[Embeddings, Route]] = Group()
        self._streams: StreamGroup[StreamItem] = StreamGroup()

    def _key(self, request: AnyRequest, caller: str) -> Hashable | None:
        if not self.policy.enabled or request.model in self._off:
            return None
        return dedup_key(self.policy, request, caller)

    async def complete(
        self,
        request: CompletionRequest,
        deadline: float | None,
        caller: str = "",
        share: Hashable | None = None,
    ) -> tuple[Completion, Route]:
        """Router.complete, shared with an identical call in flight when the policy allows, or
        with any call in flight under the same `share` key (the response cache's misses: a
        burst of identical misses makes one upstream call)."""
        key = share if share is not None else self._key(request, caller)
        if key is None:
            return await self.router.complete(request, deadline)
        if self._unary.running(key):
            emit(self.listeners, Deduplicated("Complete"))  # counted on joining, not on answer
        (completion, route), shared = await self._unary.do(
            key, lambda: self.router.complete(request, deadline)
        )
        if shared:
            route = dataclasses.replace(route, shared=True)
        return completion, route

    async def embed(
        self, request: EmbeddingRequest, deadline: float | None, caller: str = ""
    ) -> tuple[Embeddings, Route]:
        """Router.embed, shared with an identical batch in flight when the policy allows (texts
        embed to the same vectors, so `sampled` does not matter)."""
        key = self._key(request, caller)
        if key is None:
            return await self.router.embed(request, deadline)
        if self._embeds.running(key):
            emit(self.listeners, Deduplicated("Embed"))
        (vectors, route), shared = await self._embeds.do(
            key, lambda: self.router.embed(request, deadline)
        )
        if shared:
            route = dataclasses.replace(route, shared=True)
        return vectors, route

    @contextlib.asynccontextmanager
    async def stream(
        self,
        request: CompletionRequest,
        deadline: float | None,
        caller: str = "",
        share: Hashable | None = None,
    ) -> AsyncIterator[AsyncIterator[StreamItem]]:
        """Router.stream's items, shared with an identical stream in flight when the policy
        allows (or under the same `share` key, as `complete`). Leaving the block ends this
        caller's interest in the stream."""
        key = share if share is not None else self._key(request, caller)
        if key is None:
            source = self.router.stream(request, deadline)
            try:
                yield source
            finally:
                await source.aclose()  # type: ignore[attr-defined]
            return
        async with self._streams.join(key, lambda: self.router.stream(request, deadline)) as (
            items,
            shared,
        ):
            if not shared:
                yield items
                return
            emit(self.listeners, Deduplicated("StreamComplete"))
            marked = _marked_shared(items)
            try:
                yield marked
            finally:
                await marked.aclose()
