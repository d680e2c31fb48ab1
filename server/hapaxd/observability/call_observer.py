"""Per-call metrics and the access-log line, for every call whichever door it came by: the door
`begin`s a call under the hapax.v1 method it is (or stands for: the HTTP door's chat is
`Complete`), and `end`s it with its CallRecord; this counts and times it, records its final
status code and error reason, and hands it to the access log (access_log.py builds its line).
No grpc, no HTTP server: the gRPC door's observing wrapper (api/observing.py) and the HTTP door
(openai_http/server.py) both call it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hapaxd.calls.record import CallRecord
from hapaxd.observability.access_log import AccessLog, ContentFilter, log
from hapaxd.observability.metrics import ERROR_TYPES, METHODS, OTHER, Metrics


class Method:
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


def final_code(info: CallRecord, error: BaseException | None, elapsed: float) -> str:
    """The status code name the call ends with, from what the call recorded (the transport is
    not asked once the call may have ended)."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        late = info.deadline is not None and elapsed >= info.deadline
        return "DEADLINE_EXCEEDED" if late else "CANCELLED"
    if info.code:
        return info.code
    return "OK" if error is None else "UNKNOWN"


class CallObserver:
    """Metrics and the access log for every hapax.v1 call.

    `trace_id` (when tracing is on) adds the current trace id to the log line; `content` (when
    logging.log_content is on) adds prompt and completion text, passed through that filter;
    `tag_client` (when tracing is on) puts the caller's key id on the server span.
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
        self._metrics = metrics
        self.methods = {path: Method(metrics, name) for path, name in METHODS.items()}
        self._by_name = {m.name: m for m in self.methods.values()}
        self.other = Method(metrics, OTHER)
        self._errors: dict[str, Any] = {}
        self.content = content is not None  # collect completion text for the log line
        self._access = AccessLog(trace_id=trace_id, content=content, logger=logger)
        self._tag_client = tag_client

    def method(self, name: str) -> Method:
        """The metric children of a method, by its bare name ("other" for one unknown)."""
        return self._by_name.get(name, self.other)

    def begin(self, method: Method) -> float:
        """A call has begun: counted as active; returns its start, for `end`."""
        method.active.inc()
        return time.perf_counter()

    def end(
        self,
        method: Method,
        info: CallRecord,
        error: BaseException | None,
        started: float,
        request: Any,
        completion: str = "",
    ) -> None:
        """The end of a call `begin` counted: its metrics and its access-log line."""
        method.active.dec()
        elapsed = time.perf_counter() - started
        code = final_code(info, error, elapsed)
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
