"""The one call path both doors use: a door decodes its request, hands the pipeline the call's
record and how to build the domain request, and encodes what comes back. Each call runs, once
and in this order:

    1. the door: shed when the gateway is full, count the call in flight (calls/door.py)
    2. the generation the call runs on, to its end (calls/generation.py)
    3. the caller's key, checked against that generation's ring
    4. validation: the door's `parse` builds the domain request (core/validation.py)
    5. the model resolved to providers able to serve the request, and the key's policy
    6. the response cache (cache/): a hit answers here, before any limit or budget counts
       it; `only-if-cached` with no hit fails here
    7. the key's rate limits (admission/limits.py), a ticket settled however the call ends,
       and its budgets (admission/budgets.py), a hold settled with what the call cost
    8. the deduplicator and through it the router (core/dedup.py, core/router.py); identical
       cache misses share one upstream call
    9. the answer stored in the cache (a stream only once it ended with a finish reason)
   10. the record: what the router returned, or why the call failed (an ErrorView)

A failure leaves as CallFailed, already noted in the record, with the ErrorView the door encodes.
A per-call feature (a usage ledger, budgets, a response cache) plugs in here, once. Plain
Python: no grpc, no HTTP server.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from hapaxd.admission.budgets import NO_HOLD, Hold
from hapaxd.admission.limits import NO_LIMITS, Ticket, delivered_tokens, estimate_tokens
from hapaxd.cache import control, entries
from hapaxd.cache.policy import Hit, Plan
from hapaxd.calls.door import Door, verify
from hapaxd.calls.errors import CallFailed
from hapaxd.calls.generation import Generation, Generations
from hapaxd.calls.record import CallRecord
from hapaxd.config import Access
from hapaxd.core.dedup import Deduplicator
from hapaxd.core.errors import CacheMiss
from hapaxd.core.router import STREAMING
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import (
    AnyRequest,
    Capability,
    Chunk,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    Route,
    Usage,
)
from hapaxd.core.validation import Limits
from hapaxd.costs import Charge

R = TypeVar("R", bound=AnyRequest)
A = TypeVar("A", Completion, Embeddings)
Parse = Callable[[str, Limits], R]  # (request id, limits) -> the validated domain request
# How a call with one answer puts its request to the deduplicator (with the key it shares a
# call in flight under, for a cache miss).
Ask = Callable[[Deduplicator, R, CallRecord, Hashable | None], Awaitable[tuple[A, Route]]]
ANY_KEY: Access = "any_key"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A unary call's answer: what the router returned, and the request it answered."""

    completion: Completion
    route: Route
    request: CompletionRequest
    charge: Charge


@dataclasses.dataclass(frozen=True, slots=True)
class Vectors:
    embeddings: Embeddings
    route: Route
    request: EmbeddingRequest
    charge: Charge


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnd:
    """A stream's last item, after its chunks: how it finished, its usage and what served it."""

    finish: FinishReason
    usage: Usage
    route: Route
    charge: Charge


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """The logical models the caller's key may use ("*" when a provider passes any name on),
    and the route table they come from."""

    names: list[str]
    routes: RouteTable


def _routed(
    request: R, record: CallRecord, generation: Generation, needs: Iterable[Capability]
) -> R:
    """`request` for the logical model it resolves to; ModelNotFound, CapabilityMissing, or
    PermissionDenied for a model or metadata the caller's key may not use."""
    model = generation.routes.resolve(request.model, needs)
    record.model = model
    if model != request.model:
        request = request.with_model(model)  # type: ignore[assignment]
    if record.key is not None:
        record.key.authorize(request)
    return request


async def _admitted(
    generation: Generation, record: CallRecord, request: AnyRequest, stream: bool
) -> Ticket:
    """The key's rate limits (RateLimited when over one); a ticket to settle at the end."""
    if record.key is None:
        return NO_LIMITS
    return await generation.limiter.admit(record.key, request, stream)


async def _budgeted(
    generation: Generation, request: AnyRequest, record: CallRecord, needs: frozenset[Capability]
) -> Hold:
    """The call's worst case reserved in its key's and team's budgets (BudgetExceeded when it
    does not fit one); a hold to settle with what it cost. Checked and reserved in one step
    of the budgets' store: concurrent calls cannot together pass a budget. Asked only when
    there are budgets and the call has a key (no await otherwise)."""
    budgets = generation.budgets
    targets = [t for rank in generation.routes.able_ranks(request.model, needs) for t in rank]
    max_tokens = request.max_tokens if isinstance(request, CompletionRequest) else 0
    return await budgets.reserve(
        record.key,
        estimate_tokens(request),
        max_tokens,
        lambda prompt, completion: generation.charges.worst(targets, prompt, completion),
    )


def _complete(
    dedup: Deduplicator, request: CompletionRequest, record: CallRecord, share: Hashable | None
) -> Awaitable[tuple[Completion, Route]]:
    return dedup.complete(request, record.deadline, record.caller, share)


def _embed(
    dedup: Deduplicator, request: EmbeddingRequest, record: CallRecord, share: Hashable | None
) -> Awaitable[tuple[Embeddings, Route]]:
    return dedup.embed(request, record.deadline, record.caller)


def _header(headers: Sequence[tuple[str, object]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value if isinstance(value, str) else ""
    return ""


async def _cached(
    generation: Generation, request: CompletionRequest, record: CallRecord
) -> tuple[Plan | None, Hit | None]:
    """What the response cache does for the call (None: it does not use the cache), and the
    hit that answers it; CacheMiss when the caller allowed only a cached answer and there is
    none."""
    cache = generation.cache
    directives = control.parse(_header(record.headers, "cache-control"))
    plan = cache.plan(request, record.key, directives)
    if plan is None:
        if directives.only_if_cached:
            raise CacheMiss(request.model)
        return None, None
    record.cache = plan.label
    hit = await cache.lookup(plan, record.deadline)
    if hit is None:
        if plan.only_if_cached:
            raise CacheMiss(request.model)
        return plan, None
    record.cache = "hit" if hit.similarity is None else "semantic_hit"
    record.cache_age, record.similarity = hit.age, hit.similarity
    return plan, hit


def _from_cache(generation: Generation, record: CallRecord, hit: Hit) -> tuple[Route, Charge]:
    """A hit's route (no provider asked) and charge (nothing: what it saved is noted)."""
    entry = hit.entry
    route = Route(entry.provider, entry.upstream_model, attempts=0, cached=True)
    charge = generation.charges.cached
    usage = entry.usage
    record.answered(route, usage, charge)
    record.saved_cost_nanos, record.saved_tokens = entry.cost_nanos, usage.total_tokens
    return route, charge


def _share(plan: Plan | None) -> Hashable | None:
    """The key identical cache misses share one upstream call under."""
    return None if plan is None or not plan.write else ("cache", plan.key)


class Calls:
    """complete, stream, embed and models: each call's whole path (module docstring)."""

    def __init__(self, door: Door, generations: Generations, limits: Limits) -> None:
        self.door = door
        self.generations = generations
        self.limits = limits

    async def complete(self, record: CallRecord, parse: Parse[CompletionRequest]) -> Answer:
        completion, route, request, charge = await self._unary(record, parse, _complete)
        return Answer(completion, route, request, charge)

    async def embed(self, record: CallRecord, parse: Parse[EmbeddingRequest]) -> Vectors:
        vectors, route, request, charge = await self._unary(record, parse, _embed)
        return Vectors(vectors, route, request, charge)

    async def _unary(
        self, record: CallRecord, parse: Parse[R], ask: Ask[R, A]
    ) -> tuple[A, Route, R, Charge]:
        """A call with one answer: the whole path, `ask` putting it to the deduplicator."""
        door = self.door
        try:
            door.enter(record)
            async with self.generations.use() as generation:
                verify(generation.keys, record, ANY_KEY, record.method)
                request = parse(record.request_id, self.limits)
                record.tags = dict(request.metadata)
                needs = request.needs()
                request = _routed(request, record, generation, needs)
                plan = None
                if generation.cache.on and isinstance(request, CompletionRequest):
                    plan, hit = await _cached(generation, request, record)
                    if hit is not None:
                        route, charge = _from_cache(generation, record, hit)
                        return hit.entry.completion(), route, request, charge  # type: ignore[return-value]
                ticket = await _admitted(generation, record, request, False)
                hold = (
                    await _budgeted(generation, request, record, needs)
                    if generation.budgets.limits and record.key is not None
                    else NO_HOLD
                )
                used, cost = None, None
                try:
                    try:
                        answer, route = await ask(generation.dedup, request, record, _share(plan))
                        used = 0 if route.shared else answer.usage.total_tokens
                    finally:
                        ticket.settle(used)
                    charge = generation.charges.of(
                        route, answer.usage, embedding=isinstance(answer, Embeddings)
                    )
                    cost = charge.cost_nanos
                finally:
                    hold.settle(cost, used or 0)  # no answer: nothing spent
                if plan is not None and not route.shared and isinstance(answer, Completion):
                    entry = entries.of_completion(answer, route.provider, cost, time.time())
                    generation.cache.store(plan, entry, record.deadline)
            record.answered(route, answer.usage, charge)
            return answer, route, request, charge
        except Exception as error:
            raise CallFailed(record.failed(error)) from None
        finally:
            door.leave(record)

    async def stream(
        self, record: CallRecord, parse: Parse[CompletionRequest]
    ) -> AsyncGenerator[Chunk | StreamEnd, None]:
        """The stream's chunks as they come (nothing before the first has come from a
        provider: failover before it is invisible), then one StreamEnd. A stream that ends
        without its usage after chunks were handed on (the caller left, the upstream broke it
        off) keeps its estimate and is charged what it delivered (admission/limits.py). The
        door must close this generator when it stops reading (contextlib.aclosing)."""
        door = self.door
        ticket, used, delivered = NO_LIMITS, None, 0
        hold = NO_HOLD
        try:
            door.enter(record)
            async with self.generations.use() as generation:
                verify(generation.keys, record, ANY_KEY, record.method)
                request = parse(record.request_id, self.limits)
                record.tags = dict(request.metadata)
                needs = request.needs() | STREAMING
                request = _routed(request, record, generation, needs)
                plan = None
                if generation.cache.on:
                    plan, hit = await _cached(generation, request, record)
                    if hit is not None:
                        served, charge = _from_cache(generation, record, hit)
                        for chunk in hit.entry.chunks:
                            record.first_token()
                            yield chunk
                        entry = hit.entry
                        yield StreamEnd(entry.finish, entry.usage, served, charge)
                        return
                ticket = await _admitted(generation, record, request, True)
                if generation.budgets.limits and record.key is not None:
                    hold = await _budgeted(generation, request, record, needs)
                finish, usage, route = FinishReason.UNSPECIFIED, Usage(), None
                kept: list[Chunk] | None = [] if plan is not None and plan.write else None
                async with generation.dedup.stream(
                    request, record.deadline, record.caller, _share(plan)
                ) as items:
                    async for item in items:
                        if isinstance(item, Route):
                            route = item  # the last item: what served the stream
                            continue
                        if item.finish_reason is not None:
                            finish = item.finish_reason
                        if item.usage is not None:
                            usage = item.usage
                        if not delivered:
                            record.first_token()
                        delivered += item.size()
                        if kept is not None:
                            kept.append(item)
                        yield item
                if route is not None:
                    used = 0 if route.shared else usage.total_tokens
                    charge = generation.charges.of(route, usage)
                    hold.settle(charge.cost_nanos, used)
                    record.answered(route, usage, charge)
                    if (
                        plan is not None
                        and kept is not None
                        and not route.shared
                        and finish is not FinishReason.UNSPECIFIED
                    ):  # a stream that ended whole: never one that broke or was left
                        entry = entries.of_stream(
                            kept,
                            usage,
                            route.provider,
                            route.upstream_model,
                            charge.cost_nanos,
                            time.time(),
                        )
                        generation.cache.store(plan, entry, record.deadline)
                    yield StreamEnd(finish, usage, route, charge)
        except Exception as error:
            raise CallFailed(record.failed(error)) from None
        finally:
            ticket.settle(used, delivered)
            if not hold.settled:  # no usage came: what it delivered, at the dearest price
                hold.settle_delivered(delivered_tokens(delivered))
            door.leave(record)

    async def models(self, record: CallRecord, parse: Callable[[], object]) -> Listing:
        """The models the caller's key may use; `parse` checks the request (it raises for one
        that could not be decoded)."""
        door = self.door
        try:
            door.enter(record)
            async with self.generations.use() as generation:
                verify(generation.keys, record, ANY_KEY, record.method)
                parse()
                key = record.key
                names = [
                    name
                    for name in generation.routes.listed_models()
                    if key is None or key.may_use(name)
                ]
                return Listing(names, generation.routes)
        except Exception as error:
            raise CallFailed(record.failed(error)) from None
        finally:
            door.leave(record)
