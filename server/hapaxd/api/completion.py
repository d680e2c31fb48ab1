"""The CompletionService servicer: protobuf in, a domain request to the deduplicator and router,
protobuf out, and every error turned into a google.rpc.Status (api/call.py `abort`, by the table
in api/status.py). Transport layer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd.admission.limits import NO_LIMITS, Limiter, Ticket
from hapaxd.api.call import CallRecord, abort, record_of
from hapaxd.api.metadata import REQUEST_ID_KEY
from hapaxd.core.generation import Generations
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import Completion, CompletionRequest, FinishReason, Role, Route, Usage
from hapaxd.core.validation import Limits, build_request

log = logging.getLogger("hapaxd.api.completion")

ROLES = {pb.ROLE_SYSTEM: Role.SYSTEM, pb.ROLE_USER: Role.USER, pb.ROLE_ASSISTANT: Role.ASSISTANT}
FINISH = {
    FinishReason.UNSPECIFIED: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}


def to_domain(
    request: pb.CompleteRequest | pb.StreamCompleteRequest, request_id: str, limits: Limits
) -> CompletionRequest:
    return build_request(
        model=request.model,
        messages=[(ROLES.get(m.role), m.content) for m in request.messages],
        prompt=request.prompt,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        temperature=request.temperature if request.HasField("temperature") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=list(request.stop),
        user=request.user,
        metadata=dict(request.metadata),
        request_id=request_id,
        limits=limits,
    )


def _usage(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _route(route: Route) -> pb.Route:
    return pb.Route(
        provider=route.provider,
        upstream_model=route.upstream_model,
        attempts=route.attempts,
        shared=route.shared,
    )


def to_response(
    completion: Completion, route: Route, request: CompletionRequest
) -> pb.CompleteResponse:
    return pb.CompleteResponse(
        id=request.request_id,
        text=completion.text,
        finish_reason=FINISH[completion.finish_reason],
        usage=_usage(completion.usage),
        route=_route(route),
        model=request.model,
    )


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """Each RPC: the call's record (api/call.py; its key already checked at the door), the
    generation of settings it runs on to its end (core/generation.py), the request validated, its
    model resolved by the route table and allowed by the key's policy, the key's rate limits,
    then the deduplicator (and through it the router); what the router returned goes into the
    response and the record."""

    def __init__(self, generations: Generations, limits: Limits, limiter: Limiter) -> None:
        self._generations = generations
        self._limits = limits
        self._limiter = limiter

    def _request(
        self,
        request: pb.CompleteRequest | pb.StreamCompleteRequest,
        record: CallRecord,
        routes: RouteTable,
    ) -> CompletionRequest:
        domain = to_domain(request, record.request_id, self._limits)
        model = routes.resolve(domain.model)
        record.model = model
        domain = domain if model == domain.model else domain.with_model(model)
        if record.key is not None:
            record.key.authorize(domain)  # PermissionDenied for a model or metadata not allowed
        return domain

    async def _admit(self, record: CallRecord, domain: CompletionRequest, stream: bool) -> Ticket:
        """The key's rate limits (RateLimited when over one); a ticket to settle at the end."""
        if record.key is None:
            return NO_LIMITS
        return await self._limiter.admit(record.key, domain, stream)

    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        record = record_of(context)
        await context.send_initial_metadata(((REQUEST_ID_KEY, record.request_id),))
        ticket, used = NO_LIMITS, None
        generation = self._generations.enter()  # the settings this call runs on, to its end
        try:
            domain = self._request(request, record, generation.routes)
            ticket = await self._admit(record, domain, stream=False)
            completion, route = await generation.dedup.complete(
                domain, record.deadline, record.caller
            )
            used = completion.usage.total_tokens
            record.answered(route, completion.usage)
            return to_response(completion, route, domain)
        except Exception as error:  # every failure leaves as a status; AbortError is not one
            failure = error
        finally:
            ticket.settle(used)
            generation.leave()
        await abort(context, failure, record)
        raise AssertionError("unreachable: abort raises")

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        record = record_of(context)
        request_id = record.request_id
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        failure: Exception | None = None
        ticket, used = NO_LIMITS, None
        generation = self._generations.enter()
        try:
            domain = self._request(request, record, generation.routes)
            model = domain.model
            ticket = await self._admit(record, domain, stream=True)
            async with generation.dedup.stream(domain, record.deadline, record.caller) as items:
                finish, usage, route = FinishReason.UNSPECIFIED, Usage(), None
                async for item in items:
                    if isinstance(item, Route):
                        route = item  # the last item: what served the stream
                        continue
                    if item.delta:
                        yield pb.StreamCompleteResponse(
                            id=request_id, delta=item.delta, model=model
                        )
                    if item.finish_reason is not None:
                        finish = item.finish_reason
                    if item.usage is not None:
                        usage = item.usage
                if route is not None:
                    used = usage.total_tokens
                    record.answered(route, usage)
                    yield pb.StreamCompleteResponse(
                        id=request_id,
                        finish_reason=FINISH[finish],
                        usage=_usage(usage),
                        route=_route(route),
                        model=model,
                    )
        except Exception as error:
            failure = error
        finally:
            ticket.settle(used)  # also when the caller left mid-stream
            generation.leave()
        if failure is not None:
            await abort(context, failure, record)
