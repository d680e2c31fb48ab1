"""The per-RPC observability interceptor: opens the call's CallRecord, has the door check the
call's API key (api/admission.py; before anything else, so a refused call is counted and logged
too), counts and times the call, records its final status code and error reason, and hands the
call to the access log (observability/access_log.py builds its one line).

Only the hapax.v1 services are observed; grpc.health.v1 and reflection calls pass through
untouched (probes every few seconds would drown the log and the request metrics).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from hapaxd.api.admission import Door
from hapaxd.api.call import CallRecord, open_record
from hapaxd.api.decoding import Undecodable, reject, safe_deserializer
from hapaxd.api.wrapping import Wrap, WrappingInterceptor
from hapaxd.observability.access_log import AccessLog, ContentFilter, log
from hapaxd.observability.metrics import ERROR_TYPES, HAPAX_PREFIX, METHODS, OTHER, Metrics

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class _Method:
    """The metric children of one method, looked up once instead of on every call."""

    __slots__ = ("active", "duration", "metrics", "name", "overhead", "requests")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self.metrics = metrics
        self.active = metrics.grpc_active.labels(name)
        self.duration = metrics.grpc_duration.labels(name)
        self.overhead = metrics.overhead.labels(name)
        self.requests: dict[str, Any] = {}

    def count(self, code: str) -> None:
        child = self.requests.get(code)
        if child is None:
            child = self.requests[code] = self.metrics.grpc_requests.labels(self.name, code)
        child.inc()


def _final_code(info: CallRecord, error: BaseException | None, elapsed: float) -> str:
    """The status code name the call ends with, from what the call recorded: the servicer context
    is not read once the call may have ended (see api/call.py)."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        late = info.deadline is not None and elapsed >= info.deadline
        return "DEADLINE_EXCEEDED" if late else "CANCELLED"
    if info.code:
        return info.code
    return "OK" if error is None else "UNKNOWN"


class ObservabilityInterceptor(WrappingInterceptor):
    """Metrics and the access log for every hapax.v1 RPC, unary and server-streaming.

    `trace_id` (when tracing is on) adds the current trace id to the log line; `content` (when
    logging.log_content is on) adds prompt and completion text, passed through that filter;
    `tag_client` (when tracing is on) puts the caller's key id on the server span;
    `door` (set by the App before it serves) sheds the call and checks its key first.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        trace_id: Callable[[], str] | None = None,
        tag_client: Callable[[str], None] | None = None,
        content: ContentFilter | None = None,
        logger: logging.Logger = log,
    ) -> None:
        super().__init__()
        self._metrics = metrics
        self._methods = {path: _Method(metrics, name) for path, name in METHODS.items()}
        self._by_name = {m.name: m for m in self._methods.values()}
        self._other = _Method(metrics, OTHER)
        self._errors: dict[str, Any] = {}
        self._content = content is not None  # collect completion text for the log line
        self._access = AccessLog(trace_id=trace_id, content=content, logger=logger)
        self.door: Door | None = None
        self._tag_client = tag_client

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        if not path.startswith(HAPAX_PREFIX):
            return None
        method = self._methods.get(path)
        return (lambda h: self._wrap(h, method or self._other, path)), method is not None

    def _wrap(
        self, handler: grpc.RpcMethodHandler, method: _Method, path: str
    ) -> grpc.RpcMethodHandler:
        # Wrapped: async unary handlers and async-generator streaming ones, which is every
        # hapax.v1 method. Anything else (client streaming, sync or reader/writer style) passes.
        if handler.request_streaming:
            return handler
        if handler.response_streaming:
            factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
            if not inspect.isasyncgenfunction(behavior):
                return handler
            wrapped = self._stream(behavior, method, path)
        else:
            factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
            if not inspect.iscoroutinefunction(behavior):
                return handler
            wrapped = self._unary(behavior, method, path)
        return factory(
            wrapped,
            request_deserializer=safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behavior: Behavior, method: _Method, path: str) -> Behavior:
        door = self.door
        counted = path in METHODS  # the door counts the gateway's own calls in flight

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            info = open_record(context, method.name)
            method.active.inc()
            started = time.perf_counter()
            error: BaseException | None = None
            response = None
            try:
                if door is not None:
                    await door.admit(context, info, door.access(path), path, counted=counted)
                if isinstance(request, Undecodable):
                    await reject(context, request)
                response = await behavior(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if door is not None:
                    door.leave(info)
                method.active.dec()
                completion = getattr(response, "text", "") if self._content else ""
                self._finish(method, info, error, started, request, completion)

        return observed

    def _stream(self, behavior: Behavior, method: _Method, path: str) -> Behavior:
        door = self.door
        counted = path in METHODS  # the door counts the gateway's own calls in flight

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            info = open_record(context, method.name)
            method.active.inc()
            started = time.perf_counter()
            error: BaseException | None = None
            deltas: list[str] | None = [] if self._content else None
            try:
                if door is not None:
                    await door.admit(context, info, door.access(path), path, counted=counted)
                if isinstance(request, Undecodable):
                    await reject(context, request)
                async for response in behavior(request, context):
                    if deltas is not None:
                        deltas.append(getattr(response, "delta", ""))
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if door is not None:
                    door.leave(info)
                method.active.dec()
                completion = "".join(deltas) if deltas is not None else ""
                self._finish(method, info, error, started, request, completion)

        return observed

    def begin(self, name: str) -> float:
        """A call that came another way (the OpenAI-compatible HTTP door) under the metrics of
        the hapax.v1 method it stands for (`Complete`, `StreamComplete`, `Embed`, `ListModels`):
        counted as active; returns its start, for `end`."""
        self._by_name.get(name, self._other).active.inc()
        return time.perf_counter()

    def end(
        self,
        name: str,
        info: CallRecord,
        error: BaseException | None,
        started: float,
        request: Any,
        completion: str = "",
    ) -> None:
        """The end of a call `begin` counted: its metrics and its access-log line."""
        method = self._by_name.get(name, self._other)
        method.active.dec()
        self._finish(method, info, error, started, request, completion)

    def _finish(
        self,
        method: _Method,
        info: CallRecord,
        error: BaseException | None,
        started: float,
        request: Any,
        completion: str,
    ) -> None:
        elapsed = time.perf_counter() - started
        code = _final_code(info, error, elapsed)
        method.count(code)
        method.duration.observe(elapsed)
        if not info.deduplicated:  # a joiner's wait is upstream time spent by another call
            method.overhead.observe(max(0.0, elapsed - info.upstream_seconds))
        if code != "OK":
            self._count_error(info.error_reason or code)
        if self._tag_client is not None and info.client:
            self._tag_client(info.client)
        if self._access.enabled():
            self._access.write(method.name, info, code, elapsed, request, completion)

    def _count_error(self, reason: str) -> None:
        child = self._errors.get(reason)
        if child is None:
            label = reason if reason in ERROR_TYPES else OTHER
            child = self._errors[reason] = self._metrics.errors.labels(label)
            if label == OTHER and len(self._errors) > 64:
                self._errors.clear()  # unknown reasons map to "other"; keep the cache small
        child.inc()
