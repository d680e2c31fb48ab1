"""Active provider health checks: each provider is probed in the background; a provider that fails
`failure_threshold` probes in a row is marked unhealthy (the router skips it) until it passes
`success_threshold` in a row. `any_usable()` is the one answer to "can some provider serve?"
(gRPC health and /readyz both ask it); `on_change` is told whenever that answer changes, after a
probe or a breaker change (the monitor listens for BreakerChanged).

Plain asyncio: no grpc (app.py turns on_change into grpc.health.v1 statuses), no HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from hapaxd.config import HealthCheckSettings
from hapaxd.core.errors import UpstreamError
from hapaxd.core.events import BreakerChanged, Event, HealthChanged, HealthChecked, Listeners, emit
from hapaxd.core.upstream import Upstream

log = logging.getLogger("hapaxd.core.health")


class _Streak:
    def __init__(self) -> None:
        self.failures = 0
        self.successes = 0


class HealthMonitor:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        settings: Callable[[Upstream], HealthCheckSettings],
        *,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
        listeners: Listeners = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._upstreams = list(upstreams)
        self._settings = settings
        self._on_change = on_change
        self._listeners = listeners
        self._sleep = sleep
        self._streaks = {u.name: _Streak() for u in self._upstreams}
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: bool | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def any_usable(self) -> bool:
        """Some provider is healthy by its probes and not refused by its breaker."""
        return any(u.usable() for u in self._upstreams)

    def __call__(self, event: Event) -> None:
        """As a listener: a breaker change may change whether some provider can serve."""
        if isinstance(event, BreakerChanged):
            self.publish_soon()

    async def publish(self) -> None:
        """Tell on_change if 'some provider can serve' has changed since last told."""
        serving = self.any_usable()
        if serving != self._serving:
            self._serving = serving
            log.log(
                logging.INFO if serving else logging.WARNING, "some provider can serve: %s", serving
            )
            if self._on_change is not None:
                await self._on_change(serving)

    def publish_soon(self) -> None:
        """publish() from synchronous code, such as a breaker's transition callback."""
        with contextlib.suppress(RuntimeError):  # no running loop: nothing is served yet
            task = asyncio.get_running_loop().create_task(self.publish())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def check(self, upstream: Upstream) -> bool:
        """One probe of one provider; updates its health and returns whether the probe passed."""
        settings = self._settings(upstream)
        streak = self._streaks[upstream.name]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(settings.timeout):
                await upstream.provider.probe()
            ok, why = True, ""
        except UpstreamError as error:
            ok, why = False, f"{error.failure_class.value}: {error.message}"
        except TimeoutError:
            ok, why = False, f"probe timed out after {settings.timeout:g}s"
        except Exception as error:  # a probe must never kill the monitor
            ok, why = False, f"probe failed: {error!r}"
        emit(self._listeners, HealthChecked(upstream.name, ok, time.perf_counter() - started))
        if ok:
            streak.failures, streak.successes = 0, streak.successes + 1
            if not upstream.healthy and streak.successes >= settings.success_threshold:
                self._mark(upstream, True, "")
        else:
            streak.failures, streak.successes = streak.failures + 1, 0
            upstream.last_error = f"health check: {why}"
            if upstream.healthy and streak.failures >= settings.failure_threshold:
                self._mark(upstream, False, why)
        return ok

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(u) for u in self._upstreams))
        await self.publish()

    def _mark(self, upstream: Upstream, healthy: bool, why: str) -> None:
        upstream.healthy = healthy
        emit(self._listeners, HealthChanged(upstream.name, healthy, why))

    async def _loop(self, upstream: Upstream) -> None:
        settings = self._settings(upstream)
        while True:
            await self.check(upstream)
            await self.publish()
            await self._sleep(settings.interval)

    def start(self) -> None:
        for upstream in self._upstreams:
            if self._settings(upstream).enabled:
                self._tasks.append(asyncio.create_task(self._loop(upstream)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
