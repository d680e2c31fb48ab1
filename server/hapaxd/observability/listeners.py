"""Listeners: what the domain reports (core/events.py), turned into Prometheus metrics, span
events and log lines. Each is one `match` over the events it cares about; the rest pass.

`PrometheusListener` increments every domain metric (provider attempts and latency, time to first
chunk, tokens, retries, failovers, breaker state and transitions, health probes, deduplicated
calls); `span_events` puts failovers, retries, breaker changes and joins on the current RPC span;
`log_events` writes a line when a breaker or a provider's health changes, or the rate-limit store
cannot be asked.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from opentelemetry import trace

from hapaxd.core.events import (
    AttemptFinished,
    BreakerChanged,
    BudgetStoreUnavailable,
    CacheEvicted,
    CacheFailed,
    CacheLookup,
    CacheStored,
    Deduplicated,
    Event,
    FailedOver,
    FirstChunk,
    HealthChanged,
    HealthChecked,
    LimiterUnavailable,
    RateLimitHit,
    Retried,
    TokensUsed,
)
from hapaxd.observability.metrics import BREAKER_STATES, OTHER, OUTCOMES, Metrics, bounded

log = logging.getLogger("hapaxd")
health_log = logging.getLogger("hapaxd.health")


class _Attempt(NamedTuple):
    requests: Any  # hapax_provider_requests_total{provider, model, outcome}
    latency: Any  # hapax_request_latency_seconds{provider}


class _Served(NamedTuple):
    ttft: Any  # hapax_time_to_first_token_seconds{provider, model}
    prompt: Any  # hapax_tokens_total{provider, model, kind="prompt"}
    completion: Any  # ... kind="completion"


class PrometheusListener:
    """Events recorded as the metrics of one Metrics registry, label values bounded.

    The children of the per-call series (an attempt's outcome and latency, time to first chunk,
    tokens) are kept by their bounded label values: prometheus_client's `labels()` takes a lock
    and checks every value, on each of the three or four events a call emits. Keyed by bounded
    values, the kept children are as many as the series (a name the config does not know is
    "other"), and a reload that changes what is known needs nothing dropped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._attempts: dict[tuple[str, str, str], _Attempt] = {}
        self._served: dict[tuple[str, str], _Served] = {}
        self._lookups: dict[str, Any] = {}  # by result: hit, semantic_hit, miss, ...

    def _attempt(self, provider: str, model: str, outcome: str) -> _Attempt:
        m = self.metrics
        key = (m.provider(provider), m.model(model), bounded(outcome, OUTCOMES))
        children = self._attempts.get(key)
        if children is None:
            children = self._attempts[key] = _Attempt(
                m.provider_requests.labels(*key), m.request_latency.labels(key[0])
            )
        return children

    def _of(self, provider: str, model: str) -> _Served:
        m = self.metrics
        key = (m.provider(provider), m.model(model))
        children = self._served.get(key)
        if children is None:
            children = self._served[key] = _Served(
                m.ttft.labels(*key),
                m.tokens.labels(*key, "prompt"),
                m.tokens.labels(*key, "completion"),
            )
        return children

    def __call__(self, event: Event) -> None:
        m = self.metrics
        match event:
            case AttemptFinished(provider, model, outcome, seconds):
                attempt = self._attempt(provider, model, outcome)
                attempt.requests.inc()
                attempt.latency.observe(seconds)
            case FirstChunk(provider, model, seconds):
                self._of(provider, model).ttft.observe(seconds)
            case TokensUsed(provider, model, prompt, completion):
                served = self._of(provider, model)
                if prompt > 0:
                    served.prompt.inc(prompt)
                if completion > 0:
                    served.completion.inc(completion)
            case CacheLookup(result):  # one a call that uses the cache: near the top
                lookups = self._lookups.get(result)
                if lookups is None:
                    lookups = self._lookups[result] = m.cache_lookups.labels(result)
                lookups.inc()
            case Retried(provider):
                m.retries.labels(m.provider(provider)).inc()
            case FailedOver(from_provider, to_provider):
                m.failovers.labels(m.provider(from_provider), m.provider(to_provider)).inc()
            case BreakerChanged(provider, state):
                name = m.provider(provider)
                label = state if state in BREAKER_STATES else OTHER
                m.breaker_transitions.labels(name, label).inc()
                if label in BREAKER_STATES:
                    m.breaker_state.labels(name).set(BREAKER_STATES[label])
            case HealthChecked(provider, ok, seconds):
                name = m.provider(provider)
                m.health_duration.labels(name).observe(seconds)
                if not ok:
                    m.health_errors.labels(name).inc()
            case HealthChanged(provider, healthy):
                m.set_provider_health(provider, healthy)
            case Deduplicated(method):
                m.deduplicated.labels(bounded(method, m.method_names)).inc()
            case RateLimitHit(client, limit):
                m.rate_limit_hits.labels(m.client(client), limit).inc()
            case LimiterUnavailable(backend, admitted):
                m.limiter_errors.labels(backend, "admitted" if admitted else "refused").inc()
            case BudgetStoreUnavailable(backend, admitted):
                m.budget_store_errors.labels(backend, "admitted" if admitted else "refused").inc()
            case CacheStored(size, held):
                m.cache_stored_bytes.inc(size)
                m.cache_bytes.set(held)
            case CacheEvicted(count, size):
                m.cache_evictions.inc(count)
                m.cache_bytes.set(size)
            case CacheFailed(backend, operation):
                m.cache_errors.labels(backend, operation).inc()


def span_events(event: Event) -> None:
    """Events on the current (RPC) span; metrics-only events pass."""
    match event:
        case Retried(provider):
            trace.get_current_span().add_event("hapax.retry", {"hapax.provider": provider})
        case FailedOver(from_provider, to_provider):
            trace.get_current_span().add_event(
                "hapax.failover",
                {"hapax.failover.from": from_provider, "hapax.failover.to": to_provider},
            )
        case BreakerChanged(provider, state):
            trace.get_current_span().add_event(
                "hapax.circuit_breaker",
                {"hapax.provider": provider, "hapax.circuit_breaker.to": state},
            )
        case Deduplicated(method):
            trace.get_current_span().add_event("hapax.deduplicated", {"rpc.method": method})


def log_events(event: Event) -> None:
    """A log line when a breaker or a provider's health changes, or the limit store is down."""
    match event:
        case LimiterUnavailable(backend, admitted, why):
            done = "admitted unchecked (fail open)" if admitted else "refused (fail closed)"
            log.warning("rate limiter %s cannot be asked (%s): call %s", backend, why, done)
        case BudgetStoreUnavailable(backend, admitted, why):
            done = "admitted unchecked (fail open)" if admitted else "refused (fail closed)"
            log.warning("budget store %s cannot be asked (%s): call %s", backend, why, done)
        case BreakerChanged(provider, state):
            log.warning("circuit breaker for %s is now %s", provider, state)
        case HealthChanged(provider, True):
            health_log.info("provider %s is healthy again", provider)
        case HealthChanged(provider, False, why):
            health_log.warning("provider %s is unhealthy: %s", provider, why)
