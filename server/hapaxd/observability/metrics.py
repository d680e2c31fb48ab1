"""Every Prometheus metric of the gateway, on one CollectorRegistry per App (observability/
listeners.py turns domain events into them; observability/call_observer.py counts calls). Label
values are bounded: unknown methods, models, providers or reasons all
count under "other". Series whose label values are all known at start begin there, at zero."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hapax.v1 import (
    admin_service_pb2,
    completion_service_pb2,
    embedding_service_pb2,
    model_service_pb2,
)
from hapaxd.config import Settings
from hapaxd.core.errors import GatewayError
from hapaxd.core.failures import FailureClass
from hapaxd.core.routes import RouteTable

OTHER = "other"
# gRPC methods this gateway serves, by full path; the label is the bare method name.
SERVICES = (
    completion_service_pb2.DESCRIPTOR.services_by_name["CompletionService"],
    embedding_service_pb2.DESCRIPTOR.services_by_name["EmbeddingService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
)
METHODS: dict[str, str] = {
    f"/{service.full_name}/{method.name}": method.name
    for service in SERVICES
    for method in service.methods
}
HAPAX_PREFIX = "/hapax.v1."
CODES = frozenset(code.name for code in grpc.StatusCode)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# An upstream attempt's outcome: success or why it failed.
OUTCOMES = frozenset({"success", *(f.value for f in FailureClass)})


def _reasons(error: type[GatewayError]) -> set[str]:
    return {error.reason}.union(*(_reasons(sub) for sub in error.__subclasses__()))


# The gateway's own ErrorInfo reasons.
REASONS = frozenset(_reasons(GatewayError))
# An RPC that failed without a gateway reason counts under its status code name.
ERROR_TYPES = REASONS | CODES
DEDUPLICATED_METHODS = ("Complete", "StreamComplete", "Embed")  # the calls a singleflight can join
TOKEN_KINDS = ("prompt", "completion")

RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1)
HEALTH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def bounded(value: str, allowed: frozenset[str]) -> str:
    """`value` as a label value when it is one of `allowed`, else "other"."""
    return value if value in allowed else OTHER


class _WithoutCreated(Collector):
    """A registry's metrics minus their `_created` series, which double the series count and
    which neither dashboards nor alerts use. Dropped here, for this registry only, rather than
    with prometheus_client's disable_created_metrics(), which is process-wide."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def exposed(registry: CollectorRegistry) -> CollectorRegistry:
    """What the side port serves of `registry`: the same metrics, no `_created` series."""
    view = CollectorRegistry(auto_describe=False)
    view.register(_WithoutCreated(registry))
    return view


class Metrics:
    """The gateway's metric objects on their own registry (never the process-global one);
    `exposed` is what /metrics serves of it."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.exposed = exposed(self.registry)
        # The label values this config knows (a reload adds to them): others count as "other".
        self.providers: frozenset[str] = frozenset()
        self.models: frozenset[str] = frozenset()
        self.clients: frozenset[str] = frozenset()
        self._served: set[tuple[str, str]] = set()
        self._limited: set[tuple[str, str]] = set()
        self.method_names = frozenset(METHODS.values())
        r = self.registry

        self.grpc_requests = Counter(
            "hapax_grpc_requests_total",
            "gRPC calls handled, by method and final status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            "hapax_grpc_request_duration_seconds",
            "Wall time of gRPC calls, by method.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.grpc_active = Gauge(
            "hapax_grpc_active_requests",
            "gRPC calls in progress, by method.",
            ["method"],
            registry=r,
        )
        self.errors = Counter(
            "hapax_errors_total",
            "Failed gRPC calls, by error reason (ErrorInfo.reason).",
            ["type"],
            registry=r,
        )
        self.provider_requests = Counter(
            "hapax_provider_requests_total",
            "Upstream attempts, by provider, logical model and outcome (success or failure class).",
            ["provider", "model", "outcome"],
            registry=r,
        )
        self.request_latency = Histogram(
            "hapax_request_latency_seconds",
            "Time spent on one upstream attempt, by provider.",
            ["provider"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "hapax_time_to_first_token_seconds",
            "Time from sending a streaming request upstream to its first chunk.",
            ["provider", "model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "hapax_tokens_total",
            "Tokens reported by upstreams, by kind (prompt or completion).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "hapax_circuit_breaker_state",
            "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "hapax_circuit_breaker_transitions_total",
            "Circuit breaker state changes, by provider and the state entered.",
            ["provider", "to"],
            registry=r,
        )
        self.health_duration = Histogram(
            "hapax_health_check_duration_seconds",
            "Duration of provider health probes.",
            ["provider"],
            buckets=HEALTH_BUCKETS,
            registry=r,
        )
        self.health_errors = Counter(
            "hapax_health_check_errors_total",
            "Failed provider health probes.",
            ["provider"],
            registry=r,
        )
        self.healthy_providers = Gauge(
            "hapax_healthy_providers",
            "Providers currently passing their health checks.",
            registry=r,
        )
        self.provider_healthy = Gauge(
            "hapax_provider_healthy",
            "1 while a provider passes its health checks, else 0.",
            ["provider"],
            registry=r,
        )
        self.retries = Counter(
            "hapax_retries_total",
            "Retries of the same provider after a failed attempt.",
            ["provider"],
            registry=r,
        )
        self.failovers = Counter(
            "hapax_failovers_total",
            "Moves from one provider to another within one call.",
            ["from", "to"],
            registry=r,
        )
        self.deduplicated = Counter(
            "hapax_deduplicated_requests_total",
            "Calls served by joining an identical call already in flight.",
            ["method"],
            registry=r,
        )
        self.rate_limit_hits = Counter(
            "hapax_rate_limit_hits_total",
            "Calls refused by a key's rate limit, by key id and limit.",
            ["client", "limit"],
            registry=r,
        )
        self.reloads = Counter(
            "hapax_config_reloads_total",
            "Config reloads (SIGHUP or the file changed), by outcome: success, or failure (the "
            "new file was invalid and the running settings were kept).",
            ["outcome"],
            registry=r,
        )
        self.last_reload = Gauge(
            "hapax_config_last_reload_success_timestamp_seconds",
            "When the running settings were loaded (start or the last successful reload).",
            registry=r,
        )
        self.limiter_errors = Counter(
            "hapax_rate_limiter_errors_total",
            "Admissions for which the rate-limit store could not be asked, by backend and by "
            "what was done (admitted: fail open; refused: fail closed).",
            ["backend", "outcome"],
            registry=r,
        )
        self.budget_store_errors = Counter(
            "hapax_budget_store_errors_total",
            "Budgeted admissions for which the budget store could not be asked, by backend and "
            "by what was done (admitted: fail open; refused: fail closed).",
            ["backend", "outcome"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "hapax_cache_lookups_total",
            "Calls that use the response cache, by what it did: hit (exact), semantic_hit, miss, "
            "refresh (cache-control no-cache) or bypass (no-store, or a sampled request).",
            ["result"],
            registry=r,
        )
        self.cache_stored_bytes = Counter(
            "hapax_cache_stored_bytes_total",
            "Bytes of answers stored in the response cache (encoded entries).",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "hapax_cache_bytes",
            "Bytes the in-process response cache holds (0 with the Redis store).",
            registry=r,
        )
        self.cache_evictions = Counter(
            "hapax_cache_evictions_total",
            "Entries the in-process response cache evicted to stay within cache.max_bytes.",
            registry=r,
        )
        self.cache_errors = Counter(
            "hapax_cache_errors_total",
            "Response cache operations that failed (get, put, decode, embed), each a miss.",
            ["backend", "operation"],
            registry=r,
        )
        self.cache_saved = Counter(
            "hapax_cache_saved_cost_total",
            "What cache hits saved: the original answers' cost, in units of the currency.",
            ["currency"],
            registry=r,
        )
        self.overhead = Histogram(
            "hapax_gateway_overhead_seconds",
            "Time spent in the gateway itself: call duration minus time waiting on upstreams.",
            ["method"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )

        self.cost = Counter(
            "hapax_cost_total",
            "What answered calls cost at the configured prices, in units of `currency`, by "
            "logical model and provider (unpriced calls add nothing: see "
            "hapax_unpriced_calls_total).",
            ["model", "provider", "currency"],
            registry=r,
        )
        self.unpriced = Counter(
            "hapax_unpriced_calls_total",
            "Answered calls whose model has no price (no cost, which is not a cost of zero).",
            ["model", "provider"],
            registry=r,
        )
        self.energy = Counter(
            "hapax_energy_joules_total",
            "Estimated energy of answered calls, in joules, by logical model and provider.",
            ["model", "provider"],
            registry=r,
        )
        self.ledger_written = Counter(
            "hapax_ledger_rows_written_total",
            "Usage ledger rows written to its store.",
            registry=r,
        )
        self.ledger_dropped = Counter(
            "hapax_ledger_rows_dropped_total",
            "Usage ledger rows dropped: the store could not take them and the spool was full.",
            registry=r,
        )

        self._healthy: dict[str, bool] = {}
        self._initialise_methods()
        self.reconfigure(settings, RouteTable(settings))

    def _initialise_methods(self) -> None:
        """Every series whose label values are all known at start exists from the start, at zero,
        so dashboards and alerts see zeros rather than no data, and rate() counts the first
        increase. Left out, to keep to a few series per provider and per (provider, model):
        failure outcomes of provider_requests and non-OK codes of grpc_requests (many values,
        most never seen), failovers (provider pairs), limiter errors, and the overflow value
        "other". Rate-limit hits exist for each key and each limit it has."""
        for method in sorted(self.method_names):
            self.grpc_active.labels(method)
            self.grpc_duration.labels(method)
            self.grpc_requests.labels(method, "OK")
            self.overhead.labels(method)
        for method in DEDUPLICATED_METHODS:
            self.deduplicated.labels(bounded(method, self.method_names))
        for reason in sorted(REASONS):
            self.errors.labels(reason)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
        self.last_reload.set_to_current_time()

    def reconfigure(self, settings: Settings, routes: RouteTable) -> None:
        """The label values of a config (at start, and after a reload): the series of providers,
        models and keys it adds start at zero; those it drops keep their last values until a
        restart, and new events for them count as "other"."""
        providers = frozenset(p.name for p in settings.providers)
        for provider in sorted(providers - self.providers):
            self.breaker_state.labels(provider).set(0)
            for state in BREAKER_STATES:
                self.breaker_transitions.labels(provider, state)
            self.provider_healthy.labels(provider).set(1)
            self._healthy[provider] = True
            self.health_duration.labels(provider)
            self.health_errors.labels(provider)
            self.retries.labels(provider)
            self.request_latency.labels(provider)
        for gone in self.providers - providers:
            self._healthy.pop(gone, None)
        self.providers = providers
        self.healthy_providers.set(sum(1 for ok in self._healthy.values() if ok))
        self.models = frozenset(routes.logical_models())
        for provider, model in routes.served():
            if (provider, model) not in self._served:
                self._served.add((provider, model))
                self.provider_requests.labels(provider, model, "success")
                self.ttft.labels(provider, model)
                for kind in TOKEN_KINDS:
                    self.tokens.labels(provider, model, kind)
                self.cost.labels(model, provider, settings.prices.currency)
                self.unpriced.labels(model, provider)
                self.energy.labels(model, provider)
        keys = settings.auth.keys if settings.auth.enabled else []
        self.clients = frozenset(k.id for k in keys)
        for key in keys:
            for limit, value in (
                ("requests_per_minute", key.requests_per_minute),
                ("tokens_per_minute", key.tokens_per_minute),
                ("concurrent_streams", key.max_concurrent_streams),
            ):
                if value and (key.id, limit) not in self._limited:
                    self._limited.add((key.id, limit))
                    self.rate_limit_hits.labels(key.id, limit)

    # Bounded label values.
    def provider(self, name: str) -> str:
        return bounded(name, self.providers)

    def model(self, name: str) -> str:
        return bounded(name, self.models)

    def client(self, name: str) -> str:
        return bounded(name, self.clients)

    def set_provider_health(self, provider: str, healthy: bool) -> None:
        name = self.provider(provider)
        self._healthy[name] = healthy
        self.provider_healthy.labels(name).set(1 if healthy else 0)
        self.healthy_providers.set(sum(1 for ok in self._healthy.values() if ok))
