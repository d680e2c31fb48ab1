"""The gateway's use cases: resolve the model, share identical in-flight requests, route.

What the servicer calls. Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Hashable

from hapaxd.config import Settings
from hapaxd.domain import Completion, CompletionRequest, Route
from hapaxd.router import Router, StreamItem
from hapaxd.singleflight import Group, StreamGroup


class Gateway:
    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        self._unary: Group[tuple[Completion, Route]] = Group()
        self._streams: StreamGroup[StreamItem] = StreamGroup()

    def resolve(self, request: CompletionRequest) -> CompletionRequest:
        """The request with its logical model filled in and known, or ModelNotFound."""
        return self.router.resolve(request)

    def _key(self, request: CompletionRequest, caller: str) -> Hashable | None:
        if not self.settings.dedup_enabled(request.model):
            return None
        who = "" if self.settings.dedup.share_across_callers else caller
        return (who, request.shape_key())

    async def complete(
        self, request: CompletionRequest, deadline: float | None, caller: str = ""
    ) -> tuple[Completion, Route]:
        """`request` as resolve() returned it."""
        key = self._key(request, caller)
        if key is None:
            return await self.router.complete(request, deadline)
        if self._unary.running(key):
            self.router.events.deduplicated("Complete")  # counted on joining, not on answer
        (completion, route), shared = await self._unary.do(
            key, lambda: self.router.complete(request, deadline)
        )
        if shared:
            route = dataclasses.replace(route, shared=True)
        return completion, route

    @contextlib.asynccontextmanager
    async def stream(
        self, request: CompletionRequest, deadline: float | None, caller: str = ""
    ) -> AsyncIterator[tuple[AsyncIterator[StreamItem], bool]]:
        """(items, shared) for a resolved request. Leaving the block stops this caller's
        interest in the stream."""
        key = self._key(request, caller)
        if key is None:
            source = self.router.stream(request, deadline)
            try:
                yield source, False
            finally:
                await source.aclose()  # type: ignore[attr-defined]
            return
        async with self._streams.join(key, lambda: self.router.stream(request, deadline)) as (
            items,
            shared,
        ):
            if shared:
                self.router.events.deduplicated("StreamComplete")
            yield items, shared
