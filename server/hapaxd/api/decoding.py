"""Request frames that are not the method's protobuf message (bad UTF-8 in a string field, a
truncated varint, wire type 7, random bytes) end as INVALID_ARGUMENT with ErrorInfo reason
MALFORMED_REQUEST, never as grpc's own UNKNOWN "Unexpected DecodeError" with a traceback.

grpc.aio calls a method's request deserializer before any handler runs, and turns anything it
raises into UNKNOWN. So each unary-request handler gets a deserializer that returns an
`Undecodable` marker instead of raising, and the handler answers the marker with the status.
The observing wrapper does this for hapax.v1 methods (api/observing.py; the call pipeline
refuses the marker after the door, so a caller without a key hears that first);
`MalformedRequestGuard` does it for every other service (the standard health service).
Transport layer.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from hapaxd.api.call import record_of, refuse
from hapaxd.api.wrapping import Wrap, WrappingInterceptor
from hapaxd.core.errors import MalformedRequest

Deserializer = Callable[[bytes], Any]


class Undecodable:
    """What a safe deserializer returns for bytes it cannot parse."""

    __slots__ = ("error",)

    def __init__(self, error: MalformedRequest) -> None:
        self.error = error


def safe_deserializer(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None
    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    message_type = getattr(message, "full_name", "request")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, and anything a custom deserializer raises
            return Undecodable(MalformedRequest(message_type, str(exc)))

    return deserialize


async def reject(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    """End the call with INVALID_ARGUMENT / MALFORMED_REQUEST; raises grpc's AbortError."""
    await refuse(context, request.error, record_of(context))


def checked(request: Any) -> Any:
    """`request`, or the MalformedRequest its bytes were raised as (for a parse step)."""
    if type(request) is Undecodable:
        raise request.error
    return request


class MalformedRequestGuard(WrappingInterceptor):
    """Safe deserializers for the unary-request methods of services other than hapax.v1."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix  # methods under it are guarded by the observing wrapper

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        if handler.request_streaming or path.startswith(self._prefix):
            return None
        return _guard, True


def _guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.response_streaming:
        factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    guarded: Callable[[Any, grpc.aio.ServicerContext], Any]
    if inspect.isasyncgenfunction(behavior):

        async def guarded_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await reject(context, request)
            async for response in behavior(request, context):
                yield response

        guarded = guarded_stream
    elif inspect.iscoroutinefunction(behavior):

        async def guarded_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await reject(context, request)
            return await behavior(request, context)

        guarded = guarded_call
    else:
        return handler  # a sync handler: not used by this gateway's aio services
    return factory(
        guarded,
        request_deserializer=safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
