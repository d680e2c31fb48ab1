"""Assembly: settings in, a running grpc.aio server out, with reflection, the standard health
service, graceful drain and signal handling. `build()` binds any port (tests use 0); `serve()` is
what `hapaxd serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import hashlib
import logging
import signal
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from hapax.v1 import (
    admin_service_pb2_grpc,
    completion_service_pb2,
    completion_service_pb2_grpc,
    embedding_service_pb2,
    embedding_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)
from hapaxd.admission.budgets import Budget, Budgets, BudgetStore, seed_from
from hapaxd.admission.keys import KeyRing
from hapaxd.admission.limits import Limiter, Store
from hapaxd.admission.stores import build_budget_store, build_store, same_store
from hapaxd.api.admin import AdminServicer
from hapaxd.api.admission import AdmissionInterceptor
from hapaxd.api.completion import CompletionServicer
from hapaxd.api.decoding import MalformedRequestGuard
from hapaxd.api.embedding import EmbeddingServicer
from hapaxd.api.models import ModelServicer
from hapaxd.api.observing import ObservingInterceptor
from hapaxd.api.tls import server_credentials
from hapaxd.api.usage import UsageServicer
from hapaxd.api.wrapping import Combined, Registering
from hapaxd.cache.policy import CacheState, ResponseCache, embedder
from hapaxd.cache.store import build_cache_store, same_cache_store
from hapaxd.calls.charges import Charges
from hapaxd.calls.door import ADMIN_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE, Door
from hapaxd.calls.generation import Generation, Generations
from hapaxd.calls.pipeline import Calls
from hapaxd.config import (
    ConfigError,
    LedgerSettings,
    ProviderSettings,
    ServerSettings,
    Settings,
)
from hapaxd.config.watch import FileWatch
from hapaxd.core.breaker import CircuitBreaker
from hapaxd.core.dedup import Deduplicator
from hapaxd.core.events import CacheEvicted, Listener, Listeners, emit
from hapaxd.core.health import HealthMonitor
from hapaxd.core.router import Router
from hapaxd.core.routes import RouteTable
from hapaxd.core.upstream import Upstream
from hapaxd.core.validation import Limits
from hapaxd.ledger import Ledger, SqliteStore
from hapaxd.ledger import Store as LedgerStore
from hapaxd.ledger.paths import ledger_path
from hapaxd.observability import Observability
from hapaxd.observability.metrics import HAPAX_PREFIX, Metrics
from hapaxd.openai_http.server import OpenAIDoor
from hapaxd.providers.registry import build_provider, spec_of

log = logging.getLogger("hapaxd")

COMPLETION_SERVICE = completion_service_pb2.DESCRIPTOR.services_by_name[
    "CompletionService"
].full_name
EMBEDDING_SERVICE = embedding_service_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
USAGE_SERVICE = usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name
HEALTH_SERVICES = ("", COMPLETION_SERVICE)
# A health name for liveness probes (Kubernetes `grpc: {service: liveness}`): SERVING while the
# process serves, whatever its providers' health, so an upstream outage takes the gateway out of
# rotation (the names above) without getting it restarted; NOT_SERVING once it drains.
LIVENESS_SERVICE = "liveness"
# The methods the call pipeline runs (calls/pipeline.py); the admission interceptor is the door
# of every other one.
PIPELINE_METHODS = (
    f"/{COMPLETION_SERVICE}/Complete",
    f"/{COMPLETION_SERVICE}/StreamComplete",
    f"/{EMBEDDING_SERVICE}/Embed",
    f"/{MODEL_SERVICE}/ListModels",
)


def limits_of(server: ServerSettings) -> Limits:
    """The request size limits validation applies, from `server:`."""
    return Limits(
        max_content_chars=server.max_content_chars,
        max_messages=server.max_messages,
        max_tools=server.max_tools,
        max_schema_bytes=server.max_schema_bytes,
        max_image_bytes=server.max_image_bytes,
        max_vendor_option_bytes=server.max_vendor_option_bytes,
    )


def _upstream_shape(settings: Settings, provider: ProviderSettings) -> tuple[object, ...]:
    """What an upstream is built from: a reload keeps the Upstream (its breaker state, health
    and connection pool) of a provider whose shape did not change."""
    return (
        provider.model_dump_json(),  # the key itself shows as "**********" here, so:
        hashlib.sha256(provider.api_key.get_secret_value().encode()).hexdigest(),
        (provider.circuit_breaker or settings.circuit_breaker).model_dump_json(),
        (provider.health_check or settings.health_check).model_dump_json(),
    )


def build_upstreams(
    settings: Settings,
    listeners: Listeners,
    clock: Callable[[], float] = time.monotonic,
    keep: Mapping[tuple[object, ...], Upstream] | None = None,
) -> list[Upstream]:
    """One Upstream per configured provider: its adapter and its circuit breaker; `keep` (by
    shape) are reused as they are."""
    keep = keep or {}
    return [
        keep.get(_upstream_shape(settings, provider))
        or Upstream(
            provider=build_provider(spec_of(provider)),
            breaker=CircuitBreaker(
                provider.circuit_breaker or settings.circuit_breaker,
                name=provider.name,
                clock=clock,
                listeners=listeners,
            ),
            weight=provider.weight,
            base_url=provider.base_url,
        )
        for provider in settings.providers
    ]


def server_options(server: ServerSettings, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The grpc core channel arguments for `server:` (README "Limits" lists them). The port is
    bound without SO_REUSEPORT, so a second gateway on a taken port fails instead of sharing
    it, except in the worker processes of `serve --workers` (`reuse_port`), which share it by
    design (workers/supervisor.py holds it for them)."""

    def ms(seconds: float | None) -> int:
        return -1 if seconds is None else round(seconds * 1000)  # -1: grpc's "no limit"

    keepalive = server.keepalive
    options = [
        ("grpc.max_receive_message_length", server.max_message_bytes),
        ("grpc.max_send_message_length", server.max_message_bytes),
        ("grpc.max_metadata_size", server.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", server.max_metadata_bytes),
        ("grpc.max_concurrent_streams", server.max_concurrent_streams),
        ("grpc.server.max_pending_requests", server.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 2 * server.max_pending_calls),
        ("grpc.max_connection_age_grace_ms", ms(server.max_connection_age_grace)),
        ("grpc.server_handshake_timeout_ms", ms(server.handshake_timeout)),
        ("grpc.keepalive_time_ms", ms(keepalive.time)),
        ("grpc.keepalive_timeout_ms", ms(keepalive.timeout)),
        # grpc 1.85 waits for a ping's ack this long, whatever keepalive_timeout says
        ("grpc.http2.ping_timeout_ms", ms(keepalive.timeout)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(keepalive.min_ping_interval)),
        ("grpc.http2.max_ping_strikes", keepalive.max_ping_strikes),
        ("grpc.http2.max_pings_without_data", keepalive.max_pings_without_data),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    if server.max_connection_idle is not None:
        options.append(("grpc.max_connection_idle_ms", ms(server.max_connection_idle)))
    if server.max_connection_age is not None:
        options.append(("grpc.max_connection_age_ms", ms(server.max_connection_age)))
    return options


class App:
    """A built gateway: the server and the parts tests and operators look at.

    `listeners` (a test's recorder, say) hear every domain event after the gateway's own
    metrics, log and tracing listeners; `clock` drives the circuit breakers."""

    def __init__(
        self,
        settings: Settings,
        *,
        address: str | None = None,
        listeners: Listeners = (),
        clock: Callable[[], float] = time.monotonic,
        interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
        observability: Observability | None = None,
        worker: int | None = None,
    ) -> None:
        """`worker`: this gateway is worker `worker` of `serve --workers` (workers/): it shares
        its ports with the other workers (SO_REUSEPORT) and keeps a ledger spool of its own."""
        self.settings = settings
        self.worker = worker
        self.observability = observability or Observability(settings)
        # One row per call that reached a provider, written off the call path (ledger/).
        self.ledger = open_ledger(
            settings.ledger, self.observability.metrics, settings.prices.currency, worker
        )
        self.observability.observer.use_ledger(self.ledger)
        # What budgets have spent: kept across reloads, in this process (seeded from the
        # ledger at start) or in a Redis the replicas share (seeded from the ledger per window).
        budget_store = build_budget_store(settings.budgets, self._ledger_spent)
        self._clock = clock
        # Who hears what the domain reports, in order; the health monitor joins below.
        self.listeners: list[Listener] = [*self.observability.listeners, *listeners]
        self.generations = Generations(
            self._generation(
                settings,
                store=None,
                budget_store=budget_store,
                cache_state=self._cache_state(settings),
            )
        )
        self.monitor = self._monitor(self.generations.current)
        self.listeners.append(self.monitor)  # a breaker change may change gRPC health
        # Who may come in (start() warns when auth is off): the cap on calls in flight and who
        # needs a key; the keys and limits themselves are each generation's.
        self.door = Door(settings.auth, settings.server.max_in_flight)
        # The one call path both doors take.
        self.calls = Calls(self.door, self.generations, limits_of(settings.server))
        self._reloading = asyncio.Lock()
        self._closing: set[asyncio.Task[object]] = set()
        self.health = health_aio.HealthServicer()
        self.server = self._grpc_server(interceptors)
        where = address or settings.server.address
        tls = settings.server.tls
        self.port = (
            self.server.add_secure_port(where, server_credentials(tls))
            if tls is not None
            else self.server.add_insecure_port(where)
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {address or settings.server.address}")
        # OpenAI's HTTP API on a port of its own, over the same generations, door and limits.
        self.openai_http = (
            OpenAIDoor(settings.openai_http, calls=self.calls, observer=self.observability.observer)
            if settings.openai_http.enabled
            else None
        )

    def _grpc_server(self, interceptors: tuple[grpc.aio.ServerInterceptor, ...]) -> grpc.aio.Server:
        """The grpc.aio server with every service: completion, embedding, models, admin, health
        and reflection."""
        settings = self.settings
        server = grpc.aio.server(
            # Tracing's and a caller's own interceptors, if any; the gateway's own wrappers
            # are applied when the handlers are registered (below), not per call.
            interceptors=(*self.observability.interceptors, *interceptors) or None,
            options=server_options(settings.server, reuse_port=self.worker is not None),
        )
        # Each handler wrapped at registration, outermost first: the observing wrapper opens
        # each hapax.v1 call's record and observes it; the pipeline's calls meet the door in the
        # pipeline, the other services (AdminService, reflection; health is always open) in the
        # admission wrapper; the guard gives non-hapax methods safe request deserializers.
        registering = Registering(
            server,
            Combined(
                ObservingInterceptor(self.observability.observer),
                AdmissionInterceptor(self.door, self.generations, PIPELINE_METHODS, HAPAX_PREFIX),
                MalformedRequestGuard(HAPAX_PREFIX),
            ),
        )
        completion_service_pb2_grpc.add_CompletionServiceServicer_to_server(
            CompletionServicer(self.calls), registering
        )
        embedding_service_pb2_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingServicer(self.calls), registering
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.calls, lambda: {u.name: u.provider.type for u in self.upstreams}),
            registering,
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(lambda: self.upstreams), registering
        )
        usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(
                self.ledger,
                lambda: self.settings.prices.currency,
                lambda: self.generations.current.budgets,
            ),
            registering,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registering)
        # What reflection.enable_server_reflection does for an aio server, through the wrapper.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                (
                    COMPLETION_SERVICE,
                    EMBEDDING_SERVICE,
                    MODEL_SERVICE,
                    USAGE_SERVICE,
                    ADMIN_SERVICE,
                    HEALTH_SERVICE,
                    REFLECTION_SERVICE,
                )
            ),
            registering,
        )
        return server

    # The current generation's parts (calls/generation.py), for operators and tests.
    @property
    def routes(self) -> RouteTable:
        return self.generations.current.routes

    @property
    def upstreams(self) -> list[Upstream]:
        return self.generations.current.upstreams

    @property
    def router(self) -> Router:
        return self.generations.current.router

    @property
    def dedup(self) -> Deduplicator:
        return self.generations.current.dedup

    @property
    def limiter(self) -> Limiter:
        return self.generations.current.limiter

    def _generation(
        self,
        settings: Settings,
        store: Store | None,
        budget_store: BudgetStore,
        cache_state: CacheState,
        keep: Sequence[Upstream] = (),
    ) -> Generation:
        """A generation of `settings`: `keep` are the running upstreams (built in the running
        settings' provider order), `store` the running rate-limit store, kept when the new
        settings would build the same one (None: build one), and `budget_store` the running
        budgets' store, kept alike."""
        running = self.settings.providers if keep else []
        kept = {_upstream_shape(self.settings, p): u for p, u in zip(running, keep, strict=True)}
        routes = RouteTable(settings)
        upstreams = build_upstreams(settings, self.listeners, self._clock, kept)
        self.observability.instrument(upstreams)
        router = Router(settings.router, routes, upstreams, listeners=self.listeners)
        dedup = Deduplicator(settings, router, listeners=self.listeners)
        if store is None or not same_store(self.settings.rate_limit, settings.rate_limit):
            store = build_store(settings.rate_limit)
        limiter = Limiter(
            store,
            fail_open=settings.rate_limit.on_store_error == "open",
            listeners=self.listeners,
        )
        charges = Charges(settings)
        if not same_store(self.settings.budgets, settings.budgets):
            budget_store = build_budget_store(settings.budgets, self._ledger_spent)
        budgets = Budgets(
            settings.budgets, budget_store, settings.prices.currency, time.time, self.listeners
        )
        if not same_cache_store(self.settings.cache, settings.cache):
            cache_state = self._cache_state(settings)
        cache = ResponseCache(
            settings.cache,
            cache_state,
            embed=embedder(routes, router),
            listeners=self.listeners,
        )
        return Generation(
            settings,
            routes,
            upstreams,
            router,
            dedup,
            limiter,
            charges,
            budgets,
            cache,
            _keys(settings),
        )

    def _cache_state(self, settings: Settings) -> CacheState:
        """The response cache's store (and semantic indexes), kept across reloads."""

        def evicted(count: int, held: int) -> None:
            emit(self.listeners, CacheEvicted(count, held))

        return CacheState(build_cache_store(settings.cache, on_evict=evicted))

    def _monitor(self, generation: Generation) -> HealthMonitor:
        settings = generation.settings
        health = {p.name: p.health_check or settings.health_check for p in settings.providers}
        return HealthMonitor(
            generation.upstreams,
            lambda upstream: health[upstream.name],
            on_change=self.set_serving,
            listeners=self.listeners,
        )

    async def reload(self, settings: Settings) -> list[str]:
        """Swap in new settings without restarting the listener: providers, models and routing,
        router, breaker, health-check and dedup settings, keys and access, rate limits and the
        in-flight cap. Calls in flight finish on the generation they began on; providers whose
        shape did not change keep their Upstream (breaker state, health, connections). Returns
        the sections that changed but take a restart (server listener, metrics, logging)."""
        async with self._reloading:
            old = self.settings
            running = self.generations.current
            generation = self._generation(
                settings,
                running.limiter.store,
                running.budgets.store,
                running.cache.state,
                keep=self.upstreams,
            )
            kept = {id(u) for u in generation.upstreams}
            retired = [u for u in self.upstreams if id(u) not in kept]
            # The old stores, when the new generation has others: closed once the old
            # generation's last call has settled its ticket and its hold on them.
            replaced = [
                old
                for old, new in (
                    (running.limiter.store, generation.limiter.store),
                    (running.budgets.store, generation.budgets.store),
                    (running.cache.state, generation.cache.state),
                )
                if old is not new
            ]
            monitor = self._monitor(generation)
            self.observability.reconfigure(settings, generation.routes)
            self.door.reconfigure(settings.auth, settings.server.max_in_flight)
            self.settings = settings
            self.generations.swap(generation, lambda: self._close(retired, replaced))
            await self.monitor.stop()
            self.listeners[self.listeners.index(self.monitor)] = monitor
            self.monitor = monitor
            await monitor.publish()
            monitor.start()
            return _restart_only(old, settings)

    async def reload_from(self, load: Callable[[], Settings], why: str) -> bool:
        """Read the config again and swap it in; an invalid one is refused with a line per bad
        key and the running settings stay. Counted in hapax_config_reloads_total."""
        metrics = self.observability.metrics
        try:
            settings = load()
            if (
                self.ledger is not None
                and settings.prices.currency != self.settings.prices.currency
            ):
                raise ConfigError(
                    f"prices.currency: the usage ledger keeps costs in "
                    f"{self.settings.prices.currency}; another currency takes another "
                    "ledger.path and a restart"
                )
        except ConfigError as exc:
            metrics.reloads.labels("failure").inc()
            log.error("config reload (%s) refused, keeping the running settings:\n%s", why, exc)
            return False
        except Exception as exc:  # a file that cannot be read, say
            metrics.reloads.labels("failure").inc()
            log.error("config reload (%s) failed, keeping the running settings: %s", why, exc)
            return False
        needs_restart = await self.reload(settings)
        if self.ledger is not None:  # the calls before the reload are in the ledger after it
            await self.ledger.flush()
        metrics.reloads.labels("success").inc()
        metrics.last_reload.set_to_current_time()
        log.info(
            "config reloaded (%s): providers %s; %d API keys",
            why,
            ", ".join(u.name for u in self.upstreams),
            len(settings.auth.keys) if settings.auth.enabled else 0,
        )
        if needs_restart:
            log.warning("config reload: these changes take a restart: %s", ", ".join(needs_restart))
        return True

    def reload_soon(self, load: Callable[[], Settings], why: str) -> None:
        """reload_from() from a signal handler."""
        self._later(self.reload_from(load, why))

    def _close(
        self, upstreams: list[Upstream], stores: Sequence[Store | BudgetStore | CacheState]
    ) -> None:
        for upstream in upstreams:
            self._later(upstream.provider.aclose())
        for store in stores:
            self._later(store.aclose())

    async def _ledger_spent(self, budget: Budget, window: str) -> int:
        """What the ledger holds for `budget` from the first day of `window` ("" total) to
        today, in its unit: the spend a budget store that lacks the window starts from."""
        if self.ledger is None:
            return 0
        today = datetime.datetime.now(datetime.UTC).date().isoformat()
        [total] = await asyncio.to_thread(
            self.ledger.store.usage,
            window or "1970-01-01",
            today,
            key_id=budget.key,
            team=budget.team,
        )
        if budget.money_nanos is not None:
            return int(total["cost_nanos"] or 0)
        return int(total["prompt_tokens"]) + int(total["completion_tokens"])

    async def _seed_budgets(self, ledger: Ledger) -> None:
        """Spend so far in each budget's window, from the ledger's rollups: a restart does not
        reset a budget. Read after the rows an earlier run left in the ledger's spool are
        written and before any of this run's are, so each call is counted once. When the
        ledger's database cannot be asked (PostgreSQL down), the start goes on: the ledger asks
        again every few seconds, before it writes anything, and the spend is added then."""
        if not self.generations.current.budgets.limits:
            return
        late = False

        async def seed() -> None:
            budgets = self.generations.current.budgets  # a reload may have come meanwhile
            today = datetime.datetime.now(datetime.UTC).date().isoformat()
            found: dict[tuple[str, str | None, str | None], tuple[int, int]] = {}

            def sums(start: str, key_id: str | None, team: str | None) -> tuple[int, int]:
                if (start, key_id, team) not in found:
                    [total] = ledger.store.usage(start, today, key_id=key_id, team=team)
                    tokens = int(total["prompt_tokens"]) + int(total["completion_tokens"])
                    found[(start, key_id, team)] = int(total["cost_nanos"] or 0), tokens
                return found[(start, key_id, team)]

            def ask() -> None:  # every question first: a failure seeds nothing, not half
                for budget, window in budgets.windows():
                    sums(window or "1970-01-01", budget.key, budget.team)

            await asyncio.to_thread(ask)
            seed_from(budgets, sums)  # answered from `found`, here on the loop
            if late:
                log.info("budgets: seeded from the usage ledger")

        if not await ledger.before_writes(seed):
            late = True
            log.warning(
                "budgets: the usage ledger cannot be asked now; they count from zero until it "
                "can (tried again every few seconds, the ledger's spend added then)"
            )

    def _later(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background; stop() waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        """Serve; if a later part cannot start (the metrics port is taken), what did start is
        stopped again before the error leaves, so nothing is left running."""
        await self.server.start()
        try:
            if self.ledger is not None:
                self.ledger.start()
                await self._seed_budgets(self.ledger)
            await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            await self.monitor.publish()
            self.monitor.start()
            await self.observability.start(ready=lambda: self.monitor.any_usable())
            if self.openai_http is not None:
                await self.openai_http.start(reuse_port=self.worker is not None)
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info(
            "serving on port %d from providers: %s",
            self.port,
            ", ".join(f"{u.name} ({u.provider.type})" for u in self.upstreams),
        )
        if self.ledger is not None:
            log.info("usage ledger: %s", ledger_path(self.settings.ledger.path))
        if self.generations.current.keys is None:
            log.warning(
                "authentication is off (auth.enabled: false): every caller that reaches port %d "
                "uses the providers; configure auth.keys before sharing this gateway",
                self.port,
            )

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            await self.health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """Health to NOT_SERVING first (so balancers stop sending), then drain within grace."""
        self.observability.draining()
        await self.health.enter_graceful_shutdown()
        await self.monitor.stop()
        if self.openai_http is not None:
            await self.openai_http.stop()
        await self.server.stop(self.settings.server.grace_period if grace is None else grace)
        for upstream in self.upstreams:
            with contextlib.suppress(Exception):
                await upstream.provider.aclose()
        with contextlib.suppress(Exception):
            await self.limiter.store.aclose()
        with contextlib.suppress(Exception):
            await self.generations.current.budgets.store.aclose()
        with contextlib.suppress(Exception):
            await self.generations.current.cache.state.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.ledger is not None:  # every call has ended: its row is queued; write them all
            await self.ledger.aclose()
        await self.observability.stop()


def open_ledger(
    settings: LedgerSettings, metrics: Metrics, currency: str, worker: int | None = None
) -> Ledger | None:
    """The usage ledger on its store, SQLite or PostgreSQL (None when `ledger.enabled` is off);
    rows it writes and drops are counted in `metrics`. ConfigError when the SQLite file cannot
    be opened or keeps costs in another currency, or the PostgreSQL URL cannot be parsed. The
    PostgreSQL server is not asked here: the store connects on its first write, and while it
    cannot, rows wait in the spool (postgres_store.py)."""
    if not settings.enabled:
        return None
    path = ledger_path(settings.path)
    store: LedgerStore
    try:
        if settings.backend == "postgres":
            import psycopg

            from hapaxd.ledger.postgres_store import PostgresStore

            try:
                store = PostgresStore(
                    postgres_dsn(settings),
                    retention_days=settings.retention_days,
                    currency=currency,
                )
            except psycopg.Error as exc:
                why = str(exc)
                secret = settings.postgres_password.get_secret_value()
                for shown in {secret, urllib.parse.quote(secret, safe="")} - {""}:
                    why = why.replace(shown, "***")
                raise ConfigError(f"ledger.postgres_url: not a usable URL: {why}") from None
        else:
            store = SqliteStore(path, retention_days=settings.retention_days, currency=currency)
    except (ValueError, OSError, sqlite3.Error) as exc:
        key = "ledger.postgres_url" if settings.backend == "postgres" else "ledger.path"
        raise ConfigError(f"{key}: {exc}") from None
    return Ledger(
        store,
        spool_path=path.with_name(path.name + ".spool" + (f".{worker}" if worker else "")),
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        queue_limit=settings.queue_limit,
        spool_limit_bytes=settings.spool_limit_bytes,
        on_dropped=metrics.ledger_dropped.inc,
        on_written=metrics.ledger_written.inc,
    )


def postgres_dsn(settings: LedgerSettings) -> str:
    """`postgres_url` with the password from `postgres_password_env`, as libpq takes it."""
    password = settings.postgres_password.get_secret_value()
    if not password:
        return settings.postgres_url
    joiner = "&" if "?" in settings.postgres_url else "?"
    return f"{settings.postgres_url}{joiner}password={urllib.parse.quote(password, safe='')}"


def _keys(settings: Settings) -> KeyRing | None:
    return KeyRing(settings.auth.keys) if settings.auth.enabled else None


# Sections a reload does not apply: the listener and the side port are bound once.
RESTART_ONLY = ("server", "metrics", "logging", "openai_http", "ledger")
LIVE_SERVER_KEYS = {"max_in_flight"}


def _restart_only(old: Settings, new: Settings) -> list[str]:
    changed = []
    for section in RESTART_ONLY:
        before, after = getattr(old, section), getattr(new, section)
        for key in type(before).model_fields:
            if section == "server" and key in LIVE_SERVER_KEYS:
                continue
            if getattr(before, key) != getattr(after, key):
                changed.append(f"{section}.{key}")
    return changed


def tune_garbage_collector() -> None:
    """For a process that serves: what exists once the gateway has started (modules, protobuf
    descriptors, config) is moved out of the collector's view, and a full collection is
    considered after 1000 second-generation passes instead of 10. With the defaults, every time
    the objects of open calls grew by a quarter Python walked all of them: 0.1-0.5 s pauses for
    every caller while 10,000 streams opened (benchmarks/README.md, "10,000 open streams").
    Young cycles are still collected as often as before. Process-wide, so `serve()` calls it, not
    App (tests run many Apps in one process)."""
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


async def serve(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    path: str = "",
    *,
    worker: int | None = None,
    started: Callable[[App], None] | None = None,
    lifeline: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM. With `load` (how to read the config again), SIGHUP reloads
    it, and so does a change of the file at `path` while `reload.watch` is on. A worker of
    `serve --workers` (workers/worker.py) passes its index, `started` (told once it serves) and
    `lifeline` (made once serving; returns when its supervisor is gone, which stops it as SIGTERM
    would)."""
    app = App(settings, worker=worker)
    await app.start()
    tune_garbage_collector()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    if worker is None:
        loop.add_signal_handler(signal.SIGINT, stopping.set)
    else:  # a terminal's Ctrl-C reaches the whole group: the supervisor decides, and signals
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    watching_supervisor = None  # held here: the loop keeps only a weak reference to a task
    if lifeline is not None:
        watching_supervisor = loop.create_task(lifeline())
        watching_supervisor.add_done_callback(lambda _: stopping.set())
    if started is not None:
        started(app)
    watching: asyncio.Task[None] | None = None
    if load is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: app.reload_soon(load, "SIGHUP"))
        if path:
            watching = loop.create_task(_watch(app, load, path))
    await stopping.wait()
    if watching is not None:
        watching.cancel()
    if watching_supervisor is not None:
        watching_supervisor.cancel()
    log.info("shutting down: draining for up to %gs", app.settings.server.grace_period)
    await app.stop()


async def _watch(app: App, load: Callable[[], Settings], path: str) -> None:
    watch = FileWatch(path)
    while True:
        await asyncio.sleep(app.settings.reload.watch_interval)
        if app.settings.reload.watch and watch.changed():
            await app.reload_from(load, f"{path} changed")
