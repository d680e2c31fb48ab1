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
from hapaxd.ledger import Ledger, LedgerRow
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
        ledger: Ledger | None = None,
    ) -> None:
        self._metrics = metrics
        self._ledger = ledger
        self.methods = {path: Method(metrics, name) for path, name in METHODS.items()}
        self._by_name = {m.name: m for m in self.methods.values()}
        self.other = Method(metrics, OTHER)
        self._errors: dict[str, Any] = {}
        self._charges: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._saved_by: dict[str, Any] = {}
        self.content = content is not None  # collect completion text for the log line
        self._access = AccessLog(trace_id=trace_id, content=content, logger=logger)
        self._tag_client = tag_client

    def use_ledger(self, ledger: Ledger | None) -> None:
        """Hand each call that reached a provider to `ledger` as a row when it ends."""
        self._ledger = ledger

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
        if info.charge is not None:
            self._charged(info)
        if info.saved_cost_nanos:
            self._saved(info)
        if self._ledger is not None and info.reached_provider:
            self._ledger.record(ledger_row(info, code, elapsed))
        if self._access.enabled():
            self._access.write(method.name, info, code, elapsed, request, completion)

    def _charged(self, info: CallRecord) -> None:
        """The call's cost (or that it had no price) and energy, on series kept by their bounded
        label values (as the provider metrics are: no labels() per call)."""
        charge = info.charge
        assert charge is not None
        m = self._metrics
        key = (m.model(info.model), m.provider(info.provider), charge.currency)
        series = self._charges.get(key)
        if series is None:
            model, provider, currency = key
            series = self._charges[key] = (
                m.cost.labels(model, provider, currency),
                m.unpriced.labels(model, provider),
                m.energy.labels(model, provider),
            )
        cost, unpriced, energy = series
        if charge.cost_nanos is None:
            unpriced.inc()
        elif charge.cost_nanos:
            cost.inc(charge.cost_nanos / 1e9)
        if charge.energy_joules:
            energy.inc(charge.energy_joules)

    def _saved(self, info: CallRecord) -> None:
        """What a cache hit saved, by currency."""
        charge = info.charge
        currency = charge.currency if charge is not None else ""
        child = self._saved_by.get(currency)
        if child is None:
            child = self._saved_by[currency] = self._metrics.cache_saved.labels(currency)
        child.inc((info.saved_cost_nanos or 0) / 1e9)

    def _count_error(self, reason: str) -> None:
        child = self._errors.get(reason)
        if child is None:
            label = reason if reason in ERROR_TYPES else OTHER
            child = self._errors[reason] = self._metrics.errors.labels(label)
            if label == OTHER and len(self._errors) > 64:
                self._errors.clear()  # unknown reasons map to "other"; keep the cache small
        child.inc()


def ledger_row(info: CallRecord, code: str, elapsed: float) -> LedgerRow:
    """The usage ledger's row of a call that reached a provider (or the cache). An answer shared
    with an identical call in flight, or answered from the cache, is rowed with no tokens and no
    cost: the call that asked the provider carries them, so no sum counts them twice (a hit's
    row says what it saved instead). A call that ended without an answer
    costs nothing here (cost 0); what an upstream bills for a stream it broke off is not known
    to the gateway."""
    charge, shared = info.charge, info.deduplicated
    zero = shared or info.cache_hit  # its tokens are another call's
    ttft = info.first_token_seconds
    return LedgerRow(
        request_id=info.request_id,
        started_at=info.started_at,
        duration_ms=elapsed * 1000,
        ttft_ms=None if ttft is None else ttft * 1000,
        door=info.door,
        method=info.method,
        key_id=info.client,
        team=info.key.team if info.key is not None else "",
        tags=info.tags,
        model=info.model,
        provider=info.provider,
        upstream_model=info.upstream_model,
        attempts=info.attempts,
        prompt_tokens=0 if zero else info.prompt_tokens,
        completion_tokens=0 if zero else info.completion_tokens,
        cached_prompt_tokens=0 if zero else info.cached_prompt_tokens,
        reasoning_tokens=0 if zero else info.reasoning_tokens,
        cost_nanos=0 if charge is None else charge.cost_nanos,
        currency="" if charge is None else charge.currency,
        energy_joules=None if charge is None else charge.energy_joules,
        code=code,
        reason=info.error_reason,
        shared=shared,
        cache=info.cache,
        saved_cost_nanos=info.saved_cost_nanos,
        saved_tokens=info.saved_tokens,
    )
