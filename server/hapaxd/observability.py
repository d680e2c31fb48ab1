"""All observability of one App behind one object: Prometheus metrics and their side port, the
per-RPC interceptor and access log, log redaction, and OpenTelemetry tracing when OTEL_* asks.

    obs = Observability(settings)                  # events, interceptors, metrics registry
    obs.instrument(upstreams)                      # per-attempt spans (only when tracing)
    await obs.start(ready=router.any_usable)       # side port up; /readyz follows `ready`
    obs.draining(); ...; await obs.stop()          # /readyz 503 during shutdown, then down
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc

from hapaxd import redaction, telemetry
from hapaxd.config import Settings
from hapaxd.events import Events
from hapaxd.interceptors import ObservabilityInterceptor
from hapaxd.metrics import Metrics, PrometheusEvents
from hapaxd.metrics_server import MetricsServer
from hapaxd.upstreams import Upstream


class FanoutEvents:
    """events.Events passed on to several listeners, in order."""

    def __init__(self, *listeners: Events) -> None:
        self.listeners = listeners

    def attempt_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        for listener in self.listeners:
            listener.attempt_finished(provider, model, outcome, seconds)

    def first_token(self, provider: str, model: str, seconds: float) -> None:
        for listener in self.listeners:
            listener.first_token(provider, model, seconds)

    def tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        for listener in self.listeners:
            listener.tokens(provider, model, prompt, completion)

    def retry(self, provider: str) -> None:
        for listener in self.listeners:
            listener.retry(provider)

    def failover(self, from_provider: str, to_provider: str) -> None:
        for listener in self.listeners:
            listener.failover(from_provider, to_provider)

    def breaker_transition(self, provider: str, to_state: str) -> None:
        for listener in self.listeners:
            listener.breaker_transition(provider, to_state)

    def health_checked(self, provider: str, ok: bool, seconds: float) -> None:
        for listener in self.listeners:
            listener.health_checked(provider, ok, seconds)

    def provider_health(self, provider: str, healthy: bool) -> None:
        for listener in self.listeners:
            listener.provider_health(provider, healthy)

    def deduplicated(self, method: str) -> None:
        for listener in self.listeners:
            listener.deduplicated(method)


def _secrets(settings: Settings) -> list[str]:
    values = [p.api_key.get_secret_value() for p in settings.providers]
    values += [
        settings.metrics.bearer_token.get_secret_value(),
        settings.metrics.basic_auth_password.get_secret_value(),
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
        redactor = redaction.install(_secrets(settings), settings.logging.redact_patterns)
        self.metrics = Metrics(settings)
        self.tracing = tracing if tracing is not None else telemetry.from_environment(environ)
        prometheus = PrometheusEvents(self.metrics)
        self.events: Events = (
            prometheus if self.tracing is None else FanoutEvents(prometheus, self.tracing.events)
        )
        access = ObservabilityInterceptor(
            self.metrics,
            trace_id=self.tracing.current_trace_id if self.tracing is not None else None,
            content=redactor.redact if settings.logging.log_content else None,
        )
        # The tracing interceptor goes first, so the server span covers the whole call and the
        # access log line can carry its trace id.
        self.interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (
            (access,) if self.tracing is None else (self.tracing.server_interceptor, access)
        )
        self.server = (
            MetricsServer(settings.metrics, self.metrics.registry)
            if settings.metrics.enabled
            else None
        )
        self._serving = False

    def events_with(self, extra: Events | None) -> Events:
        """These events, also passed on to `extra` (e.g. a test's recorder) when given."""
        return self.events if extra is None else FanoutEvents(self.events, extra)

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
