"""Assembly: settings in, a running grpc.aio server out, with reflection, the standard health
service, graceful drain and signal handling. `build()` binds any port (tests use 0); `serve()` is
what `hapaxd serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
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
from hapaxd.admin import AdminServicer
from hapaxd.breaker import CircuitBreaker, State
from hapaxd.config import ServerSettings, Settings
from hapaxd.decoding import MalformedRequestGuard
from hapaxd.events import Events
from hapaxd.gateway import Gateway
from hapaxd.health import HealthMonitor
from hapaxd.metrics import HAPAX_PREFIX
from hapaxd.observability import Observability
from hapaxd.providers.registry import build_provider
from hapaxd.router import Router
from hapaxd.service import CompletionServicer
from hapaxd.upstreams import Upstream
from hapaxd.validation import Limits

log = logging.getLogger("hapaxd")

COMPLETION_SERVICE = completion_service_pb2.DESCRIPTOR.services_by_name[
    "CompletionService"
].full_name
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICES = ("", COMPLETION_SERVICE)


def build_upstreams(
    settings: Settings,
    events: Events,
    clock: Callable[[], float] | None = None,
    on_breaker_change: Callable[[], None] = lambda: None,
) -> list[Upstream]:
    upstreams = []
    for provider_settings in settings.providers:
        name = provider_settings.name

        def on_transition(state: State, name: str = name) -> None:
            log.warning("circuit breaker for %s is now %s", name, state.value)
            events.breaker_transition(name, state.value)
            on_breaker_change()

        breaker_settings = provider_settings.circuit_breaker or settings.circuit_breaker
        breaker = (
            CircuitBreaker(breaker_settings, on_transition=on_transition)
            if clock is None
            else CircuitBreaker(breaker_settings, clock=clock, on_transition=on_transition)
        )
        upstreams.append(
            Upstream(
                provider=build_provider(provider_settings.spec()),
                breaker=breaker,
                weight=provider_settings.weight,
                base_url=provider_settings.base_url,
            )
        )
    return upstreams


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
    """A built gateway: the server and the parts tests and operators look at."""

    def __init__(
        self,
        settings: Settings,
        *,
        address: str | None = None,
        events: Events | None = None,
        clock: Callable[[], float] | None = None,
        interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
        observability: Observability | None = None,
    ) -> None:
        self.settings = settings
        self.observability = observability or Observability(settings)
        self.events = self.observability.events_with(events)
        self.upstreams = build_upstreams(
            settings, self.events, clock, on_breaker_change=lambda: self.monitor.publish_soon()
        )
        self.observability.instrument(self.upstreams)
        self.router = Router(settings, self.upstreams, events=self.events)
        health_settings = {
            p.name: p.health_check or settings.health_check for p in settings.providers
        }
        self.monitor = HealthMonitor(
            self.upstreams,
            lambda upstream: health_settings[upstream.name],
            on_change=self.set_serving,
            events=self.events,
        )
        self.gateway = Gateway(settings, self.router)
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(
            # Innermost last: the guard gives non-hapax methods safe request deserializers.
            interceptors=(
                *self.observability.interceptors,
                *interceptors,
                MalformedRequestGuard(HAPAX_PREFIX),
            ),
            options=server_options(settings.server),
        )
        completion_service_pb2_grpc.add_CompletionServiceServicer_to_server(
            CompletionServicer(
                self.gateway,
                Limits(settings.server.max_content_chars, settings.server.max_messages),
            ),
            self.server,
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(self.upstreams), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                COMPLETION_SERVICE,
                ADMIN_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.port = self.server.add_insecure_port(address or settings.server.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address or settings.server.address}")

    async def start(self) -> None:
        """Serve; if a later part cannot start (the metrics port is taken), what did start is
        stopped again before the error leaves, so nothing is left running."""
        await self.server.start()
        try:
            await self.monitor.publish()
            self.monitor.start()
            await self.observability.start(ready=self.router.any_usable)
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info(
            "serving on port %d from providers: %s",
            self.port,
            ", ".join(f"{u.name} ({u.provider.type})" for u in self.upstreams),
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
