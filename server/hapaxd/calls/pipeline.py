"""The one call path both doors use: a door decodes its request, hands the pipeline the call's
record and how to build the domain request, and encodes what comes back. Each call runs, once
and in this order:

    1. the door: shed when the gateway is full, count the call in flight (calls/door.py)
    2. the generation the call runs on, to its end (calls/generation.py)
    3. the caller's key, checked against that generation's ring
    4. validation: the door's `parse` builds the domain request (core/validation.py)
    5. the model resolved to providers able to serve the request, and the key's policy
    6. the key's rate limits (admission/limits.py), a ticket settled however the call ends
    7. the deduplicator and through it the router (core/dedup.py, core/router.py)
    8. the record: what the router returned, or why the call failed (an ErrorView)

A failure leaves as CallFailed, already noted in the record, with the ErrorView the door encodes.
A per-call feature (a usage ledger, budgets, a response cache) plugs in here, once. Plain
Python: no grpc, no HTTP server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

from hapaxd.admission.budgets import NO_HOLD, Hold
from hapaxd.admission.limits import NO_LIMITS, Ticket, delivered_tokens, estimate_tokens
from hapaxd.calls.door import Door, verify
from hapaxd.calls.errors import CallFailed
from hapaxd.calls.generation import Generation, Generations
from hapaxd.calls.record import CallRecord
from hapaxd.config import Access
from hapaxd.core.dedup import Deduplicator
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
# How a call with one answer puts its request to the deduplicator.
Ask = Callable[[Deduplicator, R, CallRecord], Awaitable[tuple[A, Route]]]
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


def _budgeted(
    generation: Generation, request: AnyRequest, record: CallRecord, needs: frozenset[Capability]
) -> Hold:
    """The call's worst case reserved in its key's and team's budgets (BudgetExceeded when it
    does not fit one); a hold to settle with what it cost. Checked and reserved with no await
    in between: concurrent calls cannot together pass a budget."""
    budgets = generation.budgets
    if record.key is None or not budgets.limits:
        return NO_HOLD
    targets = [t for rank in generation.routes.able_ranks(request.model, needs) for t in rank]
    max_tokens = request.max_tokens if isinstance(request, CompletionRequest) else 0
    return budgets.reserve(
        record.key,
        estimate_tokens(request),
        max_tokens,
        lambda prompt, completion: generation.charges.worst(targets, prompt, completion),
    )


def _complete(
    dedup: Deduplicator, request: CompletionRequest, record: CallRecord
) -> Awaitable[tuple[Completion, Route]]:
    return dedup.complete(request, record.deadline, record.caller)


def _embed(
    dedup: Deduplicator, request: EmbeddingRequest, record: CallRecord
) -> Awaitable[tuple[Embeddings, Route]]:
    return dedup.embed(request, record.deadline, record.caller)


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
                ticket = await _admitted(generation, record, request, False)
                hold = _budgeted(generation, request, record, needs)
                used, cost = None, None
                try:
                    try:
                        answer, route = await ask(generation.dedup, request, record)
                        used = 0 if route.shared else answer.usage.total_tokens
                    finally:
                        ticket.settle(used)
                    charge = generation.charges.of(
                        route, answer.usage, embedding=isinstance(answer, Embeddings)
                    )
                    cost = charge.cost_nanos
                finally:
                    hold.settle(cost, used or 0)  # no answer: nothing spent
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
                ticket = await _admitted(generation, record, request, True)
                hold = _budgeted(generation, request, record, needs)
                finish, usage, route = FinishReason.UNSPECIFIED, Usage(), None
                async with generation.dedup.stream(
                    request, record.deadline, record.caller
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
                        yield item
                if route is not None:
                    used = 0 if route.shared else usage.total_tokens
                    charge = generation.charges.of(route, usage)
                    hold.settle(charge.cost_nanos, used)
                    record.answered(route, usage, charge)
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
