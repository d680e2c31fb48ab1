"""The router: for a logical model, tries its providers in the route table's order (weighted
within a rank), retries by the retry policy, fails over by failure class, and spends one deadline
budget on all attempts. Streams commit to a provider only once its first chunk has arrived.

It returns what it did: a unary call's Route (provider, attempts, upstream seconds), a stream's
chunks followed by one Route. Plain Python: no grpc, no HTTP client. Errors come in as
UpstreamError and leave as GatewayError, carrying the attempts made and the upstream time spent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar, cast

from hapaxd.config import RouterSettings
from hapaxd.core.errors import (
    Attempt,
    CallerRejected,
    DeadlineExceeded,
    GatewayError,
    NoProviderAvailable,
    StreamInterrupted,
    UpstreamError,
    stream_ended_early,
)
from hapaxd.core.events import (
    AttemptFinished,
    FailedOver,
    FirstChunk,
    Listeners,
    Retried,
    TokensUsed,
    emit,
)
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import Embedder
from hapaxd.core.retry import RetryPolicy
from hapaxd.core.routes import Needs, RouteTable
from hapaxd.core.types import (
    AnyRequest,
    Capability,
    Chunk,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Route,
    Usage,
)
from hapaxd.core.upstream import Upstream

StreamItem = Chunk | Route  # a stream's chunks, then one Route saying what served it
ChunkSource = AsyncGenerator[Chunk, None]
T = TypeVar("T")
STREAMING: Needs = frozenset({Capability.STREAMING})
Sleep = Callable[[float], Awaitable[None]]


class _Call:
    """The attempts of one routed call: its deadline budget, what each attempt cost, and the
    bookkeeping shared by unary and streaming."""

    def __init__(self, router: Router, request: AnyRequest, deadline: float | None) -> None:
        self.router = router
        self.request = request
        self.loop = asyncio.get_running_loop()
        seconds = deadline if deadline is not None else router.settings.default_deadline
        self.end = self.loop.time() + seconds
        self.attempts: list[Attempt] = []
        self.last: Upstream | None = None
        self.upstream_seconds = 0.0
        self.skipped = False  # some provider was not tried: breaker open or health failing

    def remaining(self) -> float:
        """Seconds left of the deadline budget; DeadlineExceeded once it is spent."""
        remaining = self.end - self.loop.time()
        if remaining <= 0:
            raise self.spent(DeadlineExceeded(self.attempts))
        return remaining

    def spent(self, error: GatewayError) -> GatewayError:
        """`error`, noting the upstream time this call spent, for the caller's record."""
        error.upstream_seconds = self.upstream_seconds
        return error

    def route(self, upstream: Upstream, model: str) -> Route:
        return Route(upstream.name, model, len(self.attempts) + 1, False, self.upstream_seconds)

    def begin(self, upstream: Upstream) -> float:
        if self.last is not None and self.last is not upstream:
            emit(self.router.listeners, FailedOver(self.last.name, upstream.name))
        self.last = upstream
        upstream.in_flight += 1
        return time.perf_counter()

    def failed(self, upstream: Upstream, error: UpstreamError, started: float) -> None:
        """Bookkeeping for a failed attempt: its record, its provider's last error and breaker
        (by its failure class)."""
        failure = error.failure_class
        self._ended(upstream, failure.value, started)
        self.attempts.append(error.attempt())
        upstream.last_error = f"{failure.value}: {error.message}"
        if failure.counts_against_provider:
            upstream.breaker.failure()
        else:
            upstream.breaker.release()

    def succeeded(self, upstream: Upstream, started: float) -> None:
        upstream.latencies.append(self._ended(upstream, "success", started))
        upstream.breaker.success()

    def abandoned(self, upstream: Upstream, started: float) -> None:
        """The caller went away (or the call was stopped) while the attempt ran."""
        self._ended(upstream, FailureClass.CANCELLED.value, started)
        upstream.breaker.release()

    def _ended(self, upstream: Upstream, outcome: str, started: float) -> float:
        upstream.in_flight -= 1
        elapsed = time.perf_counter() - started
        self.upstream_seconds += elapsed
        emit(
            self.router.listeners,
            AttemptFinished(upstream.name, self.request.model, outcome, elapsed),
        )
        return elapsed

    def tokens(self, upstream: Upstream, usage: Usage) -> None:
        emit(
            self.router.listeners,
            TokensUsed(
                upstream.name, self.request.model, usage.prompt_tokens, usage.completion_tokens
            ),
        )

    def exhausted(self) -> NoProviderAvailable:
        hints = [a.retry_after for a in self.attempts if a.retry_after is not None]
        error = NoProviderAvailable(
            self.request.model, self.attempts, min(hints, default=None), self.skipped
        )
        self.spent(error)
        return error


class Router:
    def __init__(
        self,
        settings: RouterSettings,
        routes: RouteTable,
        upstreams: Sequence[Upstream],
        *,
        listeners: Listeners = (),
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.upstreams = {u.name: u for u in upstreams}
        # The upstreams whose adapter can embed: the only ones an embedding call is sent to,
        # whatever capabilities the config declares.
        self.embedders = frozenset(u.name for u in upstreams if isinstance(u.provider, Embedder))
        self.listeners = listeners
        self.rng = rng or random.Random()
        self.retry = RetryPolicy(settings.retry, self.rng)
        self.sleep = sleep

    def ordered_targets(self, model: str, needs: Needs = frozenset()) -> list[tuple[Upstream, str]]:
        """(upstream, upstream model) in the order to try: ranks in preference order, each rank
        shuffled by weight; only providers able to do what the call `needs`."""
        ordered: list[tuple[Upstream, str]] = []
        for rank in self.routes.able_ranks(model, needs):
            pool = [(self.upstreams[name], up) for name, up in rank]
            if len(pool) == 1:
                ordered.append(pool[0])
                continue
            while pool:
                pick = self.rng.choices(range(len(pool)), [u.weight for u, _ in pool])[0]
                ordered.append(pool.pop(pick))
        return ordered

    async def _first_success(
        self,
        call: _Call,
        attempt: Callable[[Upstream, str], Awaitable[T]],
        needs: Needs,
        among: frozenset[str] | None = None,
    ) -> tuple[Upstream, str, T, float]:
        """Run `attempt` on each target in order (only those named in `among`, when given) until
        one succeeds: (upstream, upstream model, result, start). After a failure its class
        decides (core/failures.py): the same provider again if retryable and the retry policy
        gives a wait that fits the budget, else the next provider if it fails over, else the
        call ends."""
        for upstream, model in self.ordered_targets(call.request.model, needs):
            if among is not None and upstream.name not in among:
                continue
            failed = 0
            while True:
                remaining = call.remaining()
                if not (upstream.healthy and upstream.breaker.allow()):
                    call.skipped = True
                    break
                started = call.begin(upstream)
                try:
                    async with asyncio.timeout(remaining):
                        result = await attempt(upstream, model)
                except UpstreamError as error:
                    call.failed(upstream, error, started)
                    failure = error.failure_class
                    if not failure.fails_over:
                        raise call.spent(CallerRejected(error.attempt())) from None
                    failed += 1
                    delay = (
                        self.retry.delay(failed, error.retry_after, call.end - call.loop.time())
                        if failure.retryable
                        else None
                    )
                    if delay is None:
                        break  # to the next provider
                    emit(self.listeners, Retried(upstream.name))
                    await self.sleep(delay)
                    continue
                except TimeoutError:
                    timeout = UpstreamError(FailureClass.TIMEOUT, upstream.name, "deadline reached")
                    call.failed(upstream, timeout, started)
                    raise call.spent(DeadlineExceeded(call.attempts)) from None
                except BaseException:
                    call.abandoned(upstream, started)
                    raise
                return upstream, model, result, started
        raise call.exhausted()

    async def complete(
        self, request: CompletionRequest, deadline: float | None = None
    ) -> tuple[Completion, Route]:
        """The answer and what served it; `request.model` is a logical model the route table
        resolved."""
        call = _Call(self, request, deadline)

        async def attempt(upstream: Upstream, model: str) -> Completion:
            return await upstream.provider.complete(request.with_model(model))

        needs = request.needs()
        upstream, model, completion, started = await self._first_success(call, attempt, needs)
        call.succeeded(upstream, started)
        call.tokens(upstream, completion.usage)
        return completion, call.route(upstream, model)

    async def embed(
        self, request: EmbeddingRequest, deadline: float | None = None
    ) -> tuple[Embeddings, Route]:
        """The vectors and what served them, by the same failover, retries and breakers. Only
        providers that can embed are asked; one answering with a vector count other than the
        number of inputs has failed (TRANSIENT): the next provider is tried and its breaker
        counts it."""
        call = _Call(self, request, deadline)
        inputs = len(request.inputs)

        async def attempt(upstream: Upstream, model: str) -> Embeddings:
            embedder = cast(Embedder, upstream.provider)  # among self.embedders only
            vectors = await embedder.embed(request.with_model(model))
            if len(vectors.vectors) != inputs:
                raise UpstreamError(
                    FailureClass.TRANSIENT,
                    upstream.name,
                    f"{len(vectors.vectors)} vectors for {inputs} inputs",
                )
            return vectors

        upstream, model, vectors, started = await self._first_success(
            call, attempt, request.needs(), self.embedders
        )
        call.succeeded(upstream, started)
        call.tokens(upstream, vectors.usage)
        return vectors, call.route(upstream, model)

    async def stream(
        self, request: CompletionRequest, deadline: float | None = None
    ) -> AsyncIterator[StreamItem]:
        """Chunks, then one Route saying what served them. Nothing is yielded until one
        provider's first chunk has arrived, so failover before that is invisible; after it a
        failure is StreamInterrupted."""
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

        needs = request.needs() | STREAMING
        upstream, model, (first, source), started = await self._first_success(call, attempt, needs)
        emit(
            self.listeners,
            FirstChunk(upstream.name, request.model, time.perf_counter() - started),
        )
        sent_chunks, sent_chars = 0, 0
        finished = False
        try:
            chunk: Chunk | None = first
            while chunk is not None:
                if chunk.usage is not None:
                    call.tokens(upstream, chunk.usage)
                yield chunk
                sent_chunks += 1
                sent_chars += len(chunk.delta)
                # A silent upstream is cut by its provider's `timeouts.idle`, read by read.
                chunk = await anext(source, None)
            finished = True
            call.succeeded(upstream, started)
        except UpstreamError as error:
            finished = True
            call.failed(upstream, error, started)
            interrupted = StreamInterrupted(
                upstream.name, sent_chunks, sent_chars, error.failure_class, error.message
            )
            raise call.spent(interrupted) from None
        finally:
            if not finished:
                call.abandoned(upstream, started)
            await source.aclose()
        yield call.route(upstream, model)
