"""Assembly: settings in, a running grpc.aio server out, with reflection, the standard health
service, graceful drain and signal handling. `build()` binds any port (tests use 0); `serve()` is
what `hapaxd serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from hapax.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    completion_service_pb2,
    completion_service_pb2_grpc,
)
from hapaxd.admission.keys import KeyRing
from hapaxd.admission.limits import Limiter
from hapaxd.admission.stores import build_store
from hapaxd.api.admin import AdminServicer
from hapaxd.api.admission import AdmissionInterceptor, Door
from hapaxd.api.completion import CompletionServicer
from hapaxd.api.decoding import MalformedRequestGuard
from hapaxd.api.tls import server_credentials
from hapaxd.config import ServerSettings, Settings
from hapaxd.core.breaker import CircuitBreaker
from hapaxd.core.dedup import Deduplicator
from hapaxd.core.events import Listener, Listeners
from hapaxd.core.health import HealthMonitor
from hapaxd.core.router import Router
from hapaxd.core.routes import RouteTable
from hapaxd.core.upstream import Upstream
from hapaxd.core.validation import Limits
from hapaxd.observability import Observability
from hapaxd.observability.metrics import HAPAX_PREFIX
from hapaxd.providers.registry import build_provider, spec_of

log = logging.getLogger("hapaxd")

COMPLETION_SERVICE = completion_service_pb2.DESCRIPTOR.services_by_name[
    "CompletionService"
].full_name
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICES = ("", COMPLETION_SERVICE)


def build_upstreams(
    settings: Settings, listeners: Listeners, clock: Callable[[], float] = time.monotonic
) -> list[Upstream]:
    """One Upstream per configured provider: its adapter and its circuit breaker."""
    return [
        Upstream(
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


def server_options(server: ServerSettings) -> list[tuple[str, int]]:
    """The grpc core channel arguments for `server:` (README "Limits" lists them)."""

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
        ("grpc.so_reuseport", 0),
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
    ) -> None:
        self.settings = settings
        self.observability = observability or Observability(settings)
        # Who hears what the domain reports, in order; the health monitor joins below.
        self.listeners: list[Listener] = [*self.observability.listeners, *listeners]
        self.routes = RouteTable(settings)
        self.upstreams = build_upstreams(settings, self.listeners, clock)
        self.observability.instrument(self.upstreams)
        self.router = Router(settings.router, self.routes, self.upstreams, listeners=self.listeners)
        health_settings = {
            p.name: p.health_check or settings.health_check for p in settings.providers
        }
        self.monitor = HealthMonitor(
            self.upstreams,
            lambda upstream: health_settings[upstream.name],
            on_change=self.set_serving,
            listeners=self.listeners,
        )
        self.listeners.append(self.monitor)  # a breaker change may change gRPC health
        self.dedup = Deduplicator(settings, self.router, listeners=self.listeners)
        # Who may come in (start() warns when auth is off), and how much each key may spend.
        auth = settings.auth
        keys = KeyRing(auth.keys) if auth.enabled else None
        self.door = (
            Door(auth, keys, settings.server.max_in_flight)
            if keys is not None or settings.server.max_in_flight is not None
            else None
        )
        if self.door is not None:
            self.observability.admit_with(self.door)
        self.limiter = Limiter(
            build_store(settings.rate_limit),
            fail_open=settings.rate_limit.on_store_error == "open",
            listeners=self.listeners,
        )
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

    def _grpc_server(self, interceptors: tuple[grpc.aio.ServerInterceptor, ...]) -> grpc.aio.Server:
        """The grpc.aio server with every service: completion, admin, health and reflection."""
        settings = self.settings
        # hapax.v1 calls meet the door in the observability interceptor; reflection needs its own
        # when it is not open (health always is).
        door = (
            (AdmissionInterceptor(self.door, HAPAX_PREFIX),)
            if self.door is not None
            and self.door.keys is not None
            and settings.auth.reflection != "open"
            else ()
        )
        server = grpc.aio.server(
            # Innermost last: the guard gives non-hapax methods safe request deserializers.
            interceptors=(
                *self.observability.interceptors,
                *door,
                *interceptors,
                MalformedRequestGuard(HAPAX_PREFIX),
            ),
            options=server_options(settings.server),
        )
        completion_service_pb2_grpc.add_CompletionServiceServicer_to_server(
            CompletionServicer(
                self.routes,
                self.dedup,
                Limits(settings.server.max_content_chars, settings.server.max_messages),
                self.limiter,
            ),
            server,
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(self.upstreams), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                COMPLETION_SERVICE,
                ADMIN_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    async def start(self) -> None:
        """Serve; if a later part cannot start (the metrics port is taken), what did start is
        stopped again before the error leaves, so nothing is left running."""
        await self.server.start()
        try:
            await self.monitor.publish()
            self.monitor.start()
            await self.observability.start(ready=self.monitor.any_usable)
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info(
            "serving on port %d from providers: %s",
            self.port,
            ", ".join(f"{u.name} ({u.provider.type})" for u in self.upstreams),
        )
        if self.door is None or self.door.keys is None:
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
        await self.server.stop(self.settings.server.grace_period if grace is None else grace)
        for upstream in self.upstreams:
            with contextlib.suppress(Exception):
                await upstream.provider.aclose()
        with contextlib.suppress(Exception):
            await self.limiter.store.aclose()
        await self.observability.stop()


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


async def serve(settings: Settings) -> None:
    app = App(settings)
    await app.start()
    tune_garbage_collector()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: draining for up to %gs", settings.server.grace_period)
    await app.stop()
