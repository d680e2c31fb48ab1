"""The router: for a logical model, tries its providers in preference order (weighted within a
rank), retries with backoff, fails over by failure class, and spends one deadline budget on all
attempts. Streams commit to a provider only once its first chunk has arrived.

Plain Python: no grpc, no HTTP client. Errors come in as UpstreamError and leave as GatewayError.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from hapaxd import callinfo
from hapaxd.config import RouterSettings, Settings
from hapaxd.domain import Chunk, Completion, CompletionRequest, Route
from hapaxd.errors import (
    Attempt,
    CallerRejected,
    DeadlineExceeded,
    FailureClass,
    ModelNotFound,
    NoProviderAvailable,
    StreamInterrupted,
    UpstreamError,
    stream_ended_early,
)
from hapaxd.events import Events, NoEvents
from hapaxd.upstreams import Upstream

StreamItem = tuple[Chunk, Route]
ChunkSource = AsyncGenerator[Chunk, None]
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class _Budget:
    """The one deadline covering every attempt of a call, on the event loop's clock."""

    def __init__(self, seconds: float) -> None:
        self.end = asyncio.get_running_loop().time() + seconds

    def remaining(self) -> float:
        return self.end - asyncio.get_running_loop().time()


class _Call:
    """The attempts of one routed call, and the bookkeeping shared by unary and streaming."""

    def __init__(self, router: Router, request: CompletionRequest, deadline: float | None) -> None:
        self.router = router
        self.request = request
        self.budget = _Budget(
            deadline if deadline is not None else router.settings.default_deadline
        )
        self.attempts: list[Attempt] = []
        self.last: Upstream | None = None

    def targets(self) -> list[tuple[Upstream, str]]:
        return self.router.ordered_targets(self.request.model)

    def check_budget(self) -> float:
        remaining = self.budget.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(self.attempts)
        return remaining

    def begin(self, upstream: Upstream) -> None:
        if self.last is not None and self.last is not upstream:
            self.router.events.failover(self.last.name, upstream.name)
        self.last = upstream
        upstream.in_flight += 1

    def failed(self, upstream: Upstream, error: UpstreamError, model: str, started: float) -> None:
        """An attempt failed before answering; a caller fault ends the call here."""
        self.count_failure(upstream, error, model, started)
        if error.failure_class is FailureClass.CALLER:
            raise CallerRejected(error.attempt())

    def count_failure(
        self, upstream: Upstream, error: UpstreamError, model: str, started: float
    ) -> None:
        """Bookkeeping for a failed attempt: its record, its last error, its breaker."""
        upstream.in_flight -= 1
        _spent_upstream(time.perf_counter() - started)
        self.attempts.append(error.attempt())
        upstream.last_error = f"{error.failure_class.value}: {error.message}"
        self.router.events.attempt_finished(
            upstream.name, model, error.failure_class.value, time.perf_counter() - started
        )
        if error.failure_class.counts_against_provider:
            upstream.breaker.failure()
        else:
            upstream.breaker.release()

    def succeeded(self, upstream: Upstream, model: str, started: float) -> None:
        upstream.in_flight -= 1
        elapsed = time.perf_counter() - started
        _spent_upstream(elapsed)
        upstream.latencies.append(elapsed)
        upstream.breaker.success()
        self.router.events.attempt_finished(upstream.name, model, "success", elapsed)

    def abandoned(self, upstream: Upstream) -> None:
        upstream.in_flight -= 1
        upstream.breaker.release()

    async def pause_before_retry(self, upstream: Upstream, error: UpstreamError, n: int) -> bool:
        """Wait before retrying the same provider; False means fail over instead."""
        retry = self.router.settings.retry
        if error.retry_after is not None:
            delay = error.retry_after
            if delay > retry.max_retry_after:
                return False
        else:
            base = min(retry.max_backoff, retry.initial_backoff * retry.multiplier**n)
            delay = base / 2 + self.router.rng.uniform(0, base / 2)
        if delay >= self.budget.remaining():
            return False
        self.router.events.retry(upstream.name)
        await self.router.sleep(delay)
        return True

    def exhausted(self) -> NoProviderAvailable:
        hints = [a.retry_after for a in self.attempts if a.retry_after is not None]
        return NoProviderAvailable(self.request.model, self.attempts, min(hints, default=None))


class Router:
    def __init__(
        self,
        settings: Settings,
        upstreams: Sequence[Upstream],
        *,
        events: Events | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = settings
        self.settings: RouterSettings = settings.router
        self.upstreams = {u.name: u for u in upstreams}
        self.events = events or NoEvents()
        self.rng = rng or random.Random()
        self.sleep = sleep
        self._routes: dict[str, list[list[tuple[str, str]]]] = {}

    def _ranks(self, model: str) -> list[list[tuple[str, str]]]:
        """(provider name, upstream model) ranks for a logical model, computed once per model."""
        ranks = self._routes.get(model)
        if ranks is None:
            ranks = [[(p.name, up) for p, up in rank] for rank in self._config.routes_for(model)]
            if len(self._routes) < 10_000:
                self._routes[model] = ranks
        return ranks

    def resolve(self, request: CompletionRequest) -> CompletionRequest:
        """Fill in the default model, or ModelNotFound."""
        model = request.model or self._config.default_model
        if not self._ranks(model):
            raise ModelNotFound(model, self._config.logical_models())
        return request if model == request.model else request.with_model(model)

    def ordered_targets(self, model: str) -> list[tuple[Upstream, str]]:
        """(upstream, upstream model) in the order to try: ranks in preference order, each rank
        shuffled by weight."""
        ordered: list[tuple[Upstream, str]] = []
        for rank in self._ranks(model):
            pool = [(self.upstreams[name], up) for name, up in rank]
            if len(pool) == 1:
                ordered.append(pool[0])
                continue
            while pool:
                pick = self.rng.choices(range(len(pool)), [u.weight for u, _ in pool])[0]
                ordered.append(pool.pop(pick))
        return ordered

    def any_usable(self) -> bool:
        return any(u.usable() for u in self.upstreams.values())

    async def _first_success(
        self, call: _Call, attempt: Callable[[Upstream, str], Awaitable[T]]
    ) -> tuple[Upstream, str, T, float]:
        """Run `attempt` on each target in order, retrying and failing over by failure class
        within the call's budget, until one succeeds: (upstream, upstream model, result, start)."""
        max_attempts = self.settings.retry.max_attempts
        for upstream, model in call.targets():
            for n in range(max_attempts):
                remaining = call.check_budget()
                if not (upstream.healthy and upstream.breaker.allow()):
                    break
                call.begin(upstream)
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(remaining):
                        result = await attempt(upstream, model)
                except UpstreamError as error:
                    call.failed(upstream, error, call.request.model, started)
                    if not (error.failure_class.retryable and n + 1 < max_attempts):
                        break
                    if not await call.pause_before_retry(upstream, error, n):
                        break
                    continue
                except TimeoutError:
                    call.failed(upstream, _timeout(upstream), call.request.model, started)
                    raise DeadlineExceeded(call.attempts) from None
                except BaseException:
                    call.abandoned(upstream)
                    raise
                return upstream, model, result, started
        raise call.exhausted()

    async def complete(
        self, request: CompletionRequest, deadline: float | None = None
    ) -> tuple[Completion, Route]:
        call = _Call(self, request, deadline)

        async def attempt(upstream: Upstream, model: str) -> Completion:
            return await upstream.provider.complete(request.with_model(model))

        upstream, model, completion, started = await self._first_success(call, attempt)
        call.succeeded(upstream, request.model, started)
        usage = completion.usage
        self.events.tokens(
            upstream.name, request.model, usage.prompt_tokens, usage.completion_tokens
        )
        return completion, Route(upstream.name, model, len(call.attempts) + 1)

    async def stream(
        self, request: CompletionRequest, deadline: float | None = None
    ) -> AsyncIterator[StreamItem]:
        """Chunks with what served them. Nothing is yielded until one provider's first chunk has
        arrived, so failover before that is invisible; after it a failure is StreamInterrupted."""
        call = _Call(self, request, deadline)

        async def attempt(upstream: Upstream, model: str) -> tuple[Chunk, ChunkSource]:
            source = upstream.provider.stream(request.with_model(model))
            try:
                first = await anext(source, None)
            except BaseException:
                await source.aclose()
                raise
            if first is None:
                raise stream_ended_early(upstream.name, 0)
            return first, source

        upstream, model, (first, source), started = await self._first_success(call, attempt)
        self.events.first_token(upstream.name, request.model, time.perf_counter() - started)
        route = Route(upstream.name, model, len(call.attempts) + 1)
        sent_chunks, sent_chars = 0, 0
        finished = False
        try:
            chunk: Chunk | None = first
            while chunk is not None:
                if chunk.usage is not None:
                    self.events.tokens(
                        upstream.name,
                        request.model,
                        chunk.usage.prompt_tokens,
                        chunk.usage.completion_tokens,
                    )
                yield chunk, route
                sent_chunks += 1
                sent_chars += len(chunk.delta)
                # A silent upstream is cut by its provider's `timeouts.idle`, read by read.
                chunk = await anext(source, None)
            finished = True
            call.succeeded(upstream, request.model, started)
        except UpstreamError as error:
            finished = True
            call.count_failure(upstream, error, request.model, started)
            raise StreamInterrupted(upstream.name, sent_chunks, sent_chars, error.message) from None
        finally:
            if not finished:
                call.abandoned(upstream)
            await source.aclose()


def _spent_upstream(seconds: float) -> None:
    info = callinfo.current()
    if info is not None:
        info.upstream_seconds += seconds


def _timeout(upstream: Upstream, why: str = "deadline reached") -> UpstreamError:
    return UpstreamError(FailureClass.TIMEOUT, upstream.name, why)
