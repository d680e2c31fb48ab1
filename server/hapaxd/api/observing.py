"""The gRPC door's per-call wrapper for hapax.v1 methods (applied to each handler once, when it
is registered: api/wrapping.py Registering): opens the call's CallRecord from the servicer
context, has the transport-neutral observer (observability/call_observer.py) count, time and log
the call, and gives each method a safe request deserializer (api/decoding.py), so bytes that are
not the method's message reach the servicer as an Undecodable marker, which the call pipeline
refuses after the door. The door itself (shedding, the key) is the pipeline's first step
(calls/pipeline.py), or the admission wrapper's for AdminService.

grpc.health.v1 and reflection calls pass through untouched (probes every few seconds would drown
the log and the request metrics). Transport layer.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from hapaxd.api.call import open_record
from hapaxd.api.decoding import safe_deserializer
from hapaxd.api.wrapping import Wrap, WrappingInterceptor
from hapaxd.observability.call_observer import CallObserver, Method
from hapaxd.observability.metrics import HAPAX_PREFIX

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class ObservingInterceptor(WrappingInterceptor):
    """Metrics and the access log for every hapax.v1 RPC, unary and server-streaming."""

    def __init__(self, observer: CallObserver) -> None:
        super().__init__()
        self.observer = observer

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        if not path.startswith(HAPAX_PREFIX):
            return None
        method = self.observer.methods.get(path)
        return (lambda h: self._wrap(h, method or self.observer.other)), method is not None

    def _wrap(self, handler: grpc.RpcMethodHandler, method: Method) -> grpc.RpcMethodHandler:
        # Wrapped: async unary handlers and async-generator streaming ones, which is every
        # hapax.v1 method. Anything else (client streaming, sync or reader/writer style) passes.
        if handler.request_streaming:
            return handler
        if handler.response_streaming:
            factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
            if not inspect.isasyncgenfunction(behavior):
                return handler
            wrapped = self._stream(behavior, method)
        else:
            factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
            if not inspect.iscoroutinefunction(behavior):
                return handler
            wrapped = self._unary(behavior, method)
        return factory(
            wrapped,
            request_deserializer=safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behavior: Behavior, method: Method) -> Behavior:
        observer = self.observer
        content = observer.content

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            info = open_record(context, method.name)
            started = observer.begin(method)
            error: BaseException | None = None
            response = None
            try:
                response = await behavior(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                completion = getattr(response, "text", "") if content else ""
                observer.end(method, info, error, started, request, completion)

        return observed

    def _stream(self, behavior: Behavior, method: Method) -> Behavior:
        observer = self.observer
        content = observer.content

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            info = open_record(context, method.name)
            started = observer.begin(method)
            error: BaseException | None = None
            deltas: list[str] | None = [] if content else None
            try:
                async for response in behavior(request, context):
                    if deltas is not None:
                        deltas.append(getattr(response, "delta", ""))
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                completion = "".join(deltas) if deltas is not None else ""
                observer.end(method, info, error, started, request, completion)

        return observed
