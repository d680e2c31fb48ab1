"""The door (calls/door.py) for the gRPC services the call pipeline does not run: AdminService
(auth.admin_service), reflection (auth.reflection), and any service added later (any valid key);
health is always open. Each call asks the door what it needs when it begins (a reload may
change it) and is checked against the current generation's key ring. hapax.v1 calls are counted
among the calls in flight (shed when the gateway is full), as the pipeline's are. Transport
layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

import grpc

from hapaxd.api.call import record_of, refuse
from hapaxd.api.decoding import Undecodable
from hapaxd.api.wrapping import Wrap, WrappingInterceptor
from hapaxd.calls.door import HEALTH_SERVICE, Door, service_of, verify
from hapaxd.calls.generation import Generations
from hapaxd.calls.record import CallRecord
from hapaxd.core.errors import GatewayError

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class AdmissionInterceptor(WrappingInterceptor):
    """The door for every method but the pipeline's (`pipeline`: their paths) and health."""

    def __init__(
        self, door: Door, generations: Generations, pipeline: Collection[str], prefix: str
    ) -> None:
        super().__init__()
        self._door = door
        self._generations = generations
        self._pipeline = frozenset(pipeline)
        self._prefix = prefix  # the gateway's own services: counted in flight

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        if path in self._pipeline or service_of(path) == HEALTH_SERVICE:
            return None
        return (lambda h: self._wrap(h, path)), True

    def _admit(self, context: grpc.aio.ServicerContext, path: str) -> CallRecord:
        """Shed (the gateway's own services) and check the key; raises GatewayError."""
        record = record_of(context)
        if path.startswith(self._prefix):
            self._door.enter(record)
        verify(self._generations.current.keys, record, self._door.access(path), path)
        return record

    def _wrap(self, handler: grpc.RpcMethodHandler, path: str) -> Any:
        kinds = {
            (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
            (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
            (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
            (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
        }
        factory, behavior = kinds[(handler.request_streaming, handler.response_streaming)]
        door = self._door
        checked: Behavior
        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record = record_of(context)
                try:
                    try:
                        self._admit(context, path)
                        if isinstance(request, Undecodable):
                            raise request.error
                    except GatewayError as refused:
                        await refuse(context, refused, record)
                    async for response in behavior(request, context):
                        yield response
                finally:
                    door.leave(record)

            checked = checked_stream
        else:

            async def checked_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record = record_of(context)
                try:
                    try:
                        self._admit(context, path)
                        if isinstance(request, Undecodable):
                            raise request.error
                    except GatewayError as refused:
                        await refuse(context, refused, record)
                    result = behavior(request, context)
                    return (await result) if inspect.isawaitable(result) else result
                finally:
                    door.leave(record)

            checked = checked_call
        return factory(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
