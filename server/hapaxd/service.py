"""The CompletionService servicer: protobuf in, domain request to the gateway, protobuf out, and
every error turned into a google.rpc.Status by status.py. Nothing else lives here."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator

import grpc
from grpc_status import rpc_status

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import callinfo
from hapaxd.domain import Chunk, Completion, CompletionRequest, FinishReason, Role, Route, Usage
from hapaxd.errors import GatewayError
from hapaxd.gateway import Gateway
from hapaxd.status import to_rpc_status
from hapaxd.validation import Limits, build_request

log = logging.getLogger("hapaxd.service")

ROLES = {pb.ROLE_SYSTEM: Role.SYSTEM, pb.ROLE_USER: Role.USER, pb.ROLE_ASSISTANT: Role.ASSISTANT}
FINISH = {
    FinishReason.UNSPECIFIED: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}
REQUEST_ID_KEY = "x-request-id"
CREDENTIAL_KEYS = ("authorization", "x-api-key")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")


def start_call(context: grpc.aio.ServicerContext, method: str = "") -> callinfo.CallInfo:
    """Open the call's record with everything read from the servicer context, once, before the
    first await. After that the context is never asked for peer, metadata or deadline again: in
    grpcio 1.85 `peer()` on a call whose transport is gone reads freed memory and crashes the
    process (tests/transport/test_dropped_connections.py)."""
    request_id, caller = "", ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and not request_id:
            if isinstance(value, str) and _REQUEST_ID.match(value):
                request_id = value
        elif key in CREDENTIAL_KEYS and not caller:
            # Who is calling, for deduplication: a digest of the credential the caller presents
            # (`authorization` or `x-api-key`), so two tenants never share one answer.
            raw = value if isinstance(value, bytes) else str(value).encode()
            caller = hashlib.sha256(raw).hexdigest()[:32]
    return callinfo.begin(
        method,
        request_id=request_id or uuid.uuid4().hex,
        caller=caller,
        peer=context.peer() or "",
        deadline=context.time_remaining(),
    )


def call_of(context: grpc.aio.ServicerContext) -> callinfo.CallInfo:
    """The record the interceptor opened for this call, or one opened now (no interceptor)."""
    info = callinfo.current()
    return info if info is not None and info.request_id else start_call(context)


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


def record(
    info: callinfo.CallInfo,
    model: str = "",
    route: Route | None = None,
    usage: Usage | None = None,
) -> None:
    """Note what this call did, for its log line and metrics."""
    if model:
        info.model = model
    if route is not None:
        info.provider, info.attempts, info.deduplicated = (
            route.provider,
            route.attempts,
            route.shared,
        )
    if usage is not None:
        info.prompt_tokens, info.completion_tokens = usage.prompt_tokens, usage.completion_tokens


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


async def abort(
    context: grpc.aio.ServicerContext, error: BaseException, info: callinfo.CallInfo
) -> None:
    """End the call with the mapped status; raises grpc's AbortError, as context.abort does."""
    request_id = info.request_id
    info.error_reason = error.reason if isinstance(error, GatewayError) else "INTERNAL"
    attempts = getattr(error, "attempts", None)
    if attempts:  # the upstream calls a failed request made, for its log line
        info.attempts, info.provider = len(attempts), attempts[-1].provider
    if not isinstance(error, GatewayError):
        log.error("internal error", exc_info=error, extra={"request_id": request_id})
    status = rpc_status.to_status(to_rpc_status(error, request_id))
    info.code = status.code.name
    info.error_message = status.details
    await context.abort(status.code, status.details, status.trailing_metadata)


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    def __init__(self, gateway: Gateway, limits: Limits) -> None:
        self._gateway = gateway
        self._limits = limits

    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        info = call_of(context)
        request_id = info.request_id
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        try:
            domain = self._gateway.resolve(to_domain(request, request_id, self._limits))
            record(info, domain.model)
            completion, route = await self._gateway.complete(domain, info.deadline, info.caller)
            record(info, domain.model, route, completion.usage)
            return to_response(completion, route, domain)
        except Exception as error:  # every failure leaves as a status; AbortError is not one
            failure = error
        await abort(context, failure, info)
        raise AssertionError("unreachable: abort raises")

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        info = call_of(context)
        request_id = info.request_id
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        failure: Exception | None = None
        try:
            domain = self._gateway.resolve(to_domain(request, request_id, self._limits))
            model = domain.model
            record(info, model)
            async with self._gateway.stream(domain, info.deadline, info.caller) as (
                items,
                shared,
            ):
                last: Chunk | None = None
                finish, usage, route = FinishReason.UNSPECIFIED, Usage(), None
                async for chunk, chunk_route in items:
                    route = chunk_route
                    if chunk.delta:
                        yield pb.StreamCompleteResponse(
                            id=request_id, delta=chunk.delta, model=model
                        )
                    if chunk.finish_reason is not None:
                        finish = chunk.finish_reason
                    if chunk.usage is not None:
                        usage = chunk.usage
                    last = chunk
                if route is not None and last is not None:
                    if shared:
                        route = Route(route.provider, route.upstream_model, route.attempts, True)
                    record(info, model, route, usage)
                    yield pb.StreamCompleteResponse(
                        id=request_id,
                        finish_reason=FINISH[finish],
                        usage=_usage(usage),
                        route=_route(route),
                        model=model,
                    )
        except Exception as error:
            failure = error
        if failure is not None:
            await abort(context, failure, info)
