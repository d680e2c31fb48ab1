"""The side-port HTTP listener (aiohttp.web, in the gateway's event loop): `/metrics` in the
Prometheus text format or OpenMetrics, optionally behind a bearer token or basic auth, plus
unauthenticated `/healthz` (liveness) and `/readyz` (readiness) for probes that do not speak gRPC;
over HTTPS when `metrics.tls` is set (certificate re-read on change, tls/certificates.py).

`/readyz` answers 200 while `ready()` is true and the gateway is not draining; app.py passes the
health monitor's `any_usable` (core/health.py: some provider's breaker admits calls and its last
health check passed), so a gateway with no usable provider is taken out of rotation.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from hapaxd.config import MetricsSettings
from hapaxd.tls.certificates import ReloadingContext

log = logging.getLogger("hapaxd.observability.metrics")

REALM = 'realm="hapax metrics"'


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Credentials:
    """What /metrics accepts: a bearer token, a basic-auth pair, either, or (none set) anyone."""

    def __init__(self, settings: MetricsSettings) -> None:
        token = settings.bearer_token.get_secret_value()
        password = settings.basic_auth_password.get_secret_value()
        self._token = token.encode() if token else None
        self._basic = (
            (settings.basic_auth_user.encode(), password.encode())
            if settings.basic_auth_user or password
            else None
        )

    @property
    def required(self) -> bool:
        return self._token is not None or self._basic is not None

    def challenge(self) -> str:
        schemes = []
        if self._token is not None:
            schemes.append(f"Bearer {REALM}")
        if self._basic is not None:
            schemes.append(f'Basic {REALM}, charset="UTF-8"')
        return ", ".join(schemes)

    def accepts(self, authorization: str | None) -> bool:
        """True when the Authorization header carries a configured credential. Secrets are
        compared in constant time; both the user and the password are always compared."""
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self._token is not None:
            return hmac.compare_digest(value.encode(), self._token)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return False
            user, sep, password = decoded.partition(b":")
            user_ok = hmac.compare_digest(user, self._basic[0])
            password_ok = hmac.compare_digest(password, self._basic[1])
            return bool(sep) and user_ok and password_ok
        return False


class MetricsServer:
    """Serves one registry on `settings.address`; `port` is the bound port (useful with port 0).

    `ready()` is asked on every /readyz; `draining()` makes /readyz answer 503 for good.
    """

    def __init__(
        self,
        settings: MetricsSettings,
        registry: CollectorRegistry,
        ready: Callable[[], bool] = lambda: True,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_scrape` runs before each /metrics answer is made (the supervisor of
        `serve --workers` gathers its workers' series there)."""
        self._settings = settings
        self._registry = registry
        self._before_scrape = before_scrape
        self._credentials = Credentials(settings)
        self.ready = ready
        self._draining = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    def draining(self) -> None:
        self._draining = True

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        host, port = _split_address(self._settings.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            tls = self._settings.tls
            context = ReloadingContext(tls, "metrics.tls").context if tls is not None else None
            await web.SockSite(self._runner, sock, ssl_context=context).start()
        except BaseException:
            await self._runner.cleanup()
            sock.close()
            raise
        scheme = "https" if self._settings.tls is not None else "http"
        log.info("metrics on %s://%s:%d (/metrics, /healthz, /readyz)", scheme, host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if not self._credentials.accepts(request.headers.get("Authorization")):
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": self._credentials.challenge()},
            )
        if self._before_scrape is not None:
            await self._before_scrape()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._registry)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        if self._draining:
            return web.Response(status=503, text="shutting down\n")
        if not self.ready():
            return web.Response(status=503, text="not ready\n")
        return web.Response(text="ready\n")
