"""The gateway's use cases: resolve the model, share identical in-flight requests, route.

What the servicer calls. Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Hashable

from hapaxd.config import DedupSettings, Settings
from hapaxd.domain import Completion, CompletionRequest, Route
from hapaxd.router import Router, StreamItem
from hapaxd.singleflight import Group, StreamGroup


def dedup_key(policy: DedupSettings, request: CompletionRequest, caller: str) -> Hashable | None:
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
        return dedup_key(self.settings.dedup, request, caller)

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
