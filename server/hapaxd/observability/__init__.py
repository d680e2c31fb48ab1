"""All observability of one App behind one object: Prometheus metrics and their side port, the
per-call observer and access log (both doors use it), log redaction, and OpenTelemetry tracing
when OTEL_* asks.

    obs = Observability(settings)                  # listeners, observer, metrics registry
    obs.instrument(upstreams)                      # per-attempt spans (only when tracing)
    await obs.start(ready=monitor.any_usable)       # side port up; /readyz follows `ready`
    obs.draining(); ...; await obs.stop()          # /readyz 503 during shutdown, then down

    call_observer.py  per-call metrics and the access-log line, transport-neutral
    access_log.py     the line itself; log_format.py renders it as JSON; redaction.py masks
    metrics.py        every Prometheus series; side_port.py serves /metrics, /healthz, /readyz
    listeners.py      domain events -> metrics, log lines, spans; tracing.py OpenTelemetry
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import grpc

from hapaxd.config import Settings
from hapaxd.config.provider_types import KIND, file_secrets
from hapaxd.core.events import Listener
from hapaxd.core.routes import RouteTable
from hapaxd.core.upstream import Upstream
from hapaxd.observability import redaction
from hapaxd.observability import tracing as telemetry
from hapaxd.observability.call_observer import CallObserver
from hapaxd.observability.listeners import PrometheusListener, log_events, span_events
from hapaxd.observability.metrics import Metrics
from hapaxd.observability.side_port import MetricsServer


def _secrets(settings: Settings) -> list[str]:
    values = [p.api_key.get_secret_value() for p in settings.providers]
    # Secrets a provider type's own library reads from the environment (Bedrock's AWS chain);
    # those it finds elsewhere (shared files, a role) its HttpClient scrubs from error text.
    ambient = {name for p in settings.providers for name in KIND[p.type].ambient_secrets}
    values += [os.environ.get(name, "") for name in sorted(ambient)]
    values += [
        v
        for p in settings.providers
        for v in file_secrets(p.type, p.credentials.get_secret_value())
    ]
    values += [
        settings.metrics.bearer_token.get_secret_value(),
        settings.metrics.basic_auth_password.get_secret_value(),
        settings.rate_limit.redis_password.get_secret_value(),
        settings.ledger.postgres_password.get_secret_value(),
    ]
    return [v for v in values if v]


class Observability:
    """Metrics, access log, redaction and tracing for one gateway.

    `tracing` defaults to what the OTEL_* variables in `environ` (default os.environ) configure,
    which is nothing when none is set; tests pass `telemetry.with_exporter(...)`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tracing: telemetry.Tracing | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # This gateway's secrets, masked in every log line while it lives (stop() detaches).
        self.redactor = redaction.attach(
            redaction.Redactor(_secrets(settings), settings.logging.redact_patterns)
        )
        self.metrics = Metrics(settings)
        self.tracing = tracing if tracing is not None else telemetry.from_environment(environ)
        # What the domain reports goes to these, in order (core/events.py).
        self.listeners: list[Listener] = [PrometheusListener(self.metrics), log_events]
        if self.tracing is not None:
            self.listeners.append(span_events)
        self.observer = CallObserver(
            self.metrics,
            trace_id=self.tracing.current_trace_id if self.tracing is not None else None,
            tag_client=self.tracing.tag_client if self.tracing is not None else None,
            content=self.redactor.redact if settings.logging.log_content else None,
        )
        # The tracing interceptor runs before the gRPC door's wrappers, so the server span
        # covers the whole call and the access log line can carry its trace id.
        self.interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (
            () if self.tracing is None else (self.tracing.server_interceptor,)
        )
        self.server = (
            MetricsServer(settings.metrics, self.metrics.exposed)
            if settings.metrics.enabled
            else None
        )
        self._serving = False

    def reconfigure(self, settings: Settings, routes: RouteTable) -> None:
        """A reload: the new config's label values, and its secrets masked too (the old ones
        stay masked: they may still be in flight)."""
        self.metrics.reconfigure(settings, routes)
        self.redactor.add(_secrets(settings), settings.logging.redact_patterns)

    def instrument(self, upstreams: Sequence[Upstream]) -> None:
        if self.tracing is not None:
            self.tracing.instrument(upstreams)

    @property
    def metrics_port(self) -> int:
        """The side port actually bound (0 when metrics are off or not started)."""
        return self.server.port if self.server is not None else 0

    async def start(self, ready: Callable[[], bool] = lambda: True) -> None:
        """Serve the side port; /readyz is 200 while serving and `ready()` (a provider usable)."""
        self._serving = True
        if self.server is not None:
            self.server.ready = lambda: self._serving and ready()
            await self.server.start()

    def draining(self) -> None:
        """Shutdown has begun: /readyz answers 503 from now on."""
        self._serving = False
        if self.server is not None:
            self.server.draining()

    async def stop(self) -> None:
        self.draining()
        if self.server is not None:
            await self.server.stop()
        if self.tracing is not None:
            self.tracing.shutdown()
        redaction.detach(self.redactor)
