"""Active health checks driven probe by probe: no clock, no sleeps."""

from __future__ import annotations

from hapaxd.config import BreakerSettings, HealthCheckSettings
from hapaxd.core.breaker import CircuitBreaker
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.health import HealthMonitor
from hapaxd.core.upstream import Upstream


class Probed:
    """A provider whose probe passes or fails as the test says."""

    type = "probed"

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise UpstreamError(FailureClass.TRANSIENT, self.name, "HTTP 503")


def monitor(*providers: Probed, **settings: int) -> tuple[HealthMonitor, list[bool]]:
    upstreams = [
        Upstream(p, CircuitBreaker(BreakerSettings()))  # type: ignore[arg-type]
        for p in providers
    ]
    changes: list[bool] = []

    async def on_change(serving: bool) -> None:
        changes.append(serving)

    policy = HealthCheckSettings(**settings)  # type: ignore[arg-type]
    return HealthMonitor(upstreams, lambda _u: policy, on_change=on_change), changes


async def test_down_after_failure_threshold_and_up_after_success_threshold() -> None:
    a = Probed("a")
    health, changes = monitor(a, failure_threshold=2, success_threshold=3)
    await health.check_all()
    assert changes == [True]
    a.up = False
    await health.check_all()
    assert changes == [True], "one failed probe is below the threshold"
    await health.check_all()
    assert changes == [True, False]
    a.up = True
    await health.check_all()
    await health.check_all()
    assert changes == [True, False]
    await health.check_all()
    assert changes == [True, False, True]
    assert a.probes == 6


async def test_serving_while_any_provider_can_serve() -> None:
    a, b = Probed("a"), Probed("b")
    health, changes = monitor(a, b, failure_threshold=1, success_threshold=1)
    await health.check_all()
    a.up = False
    await health.check_all()
    assert changes == [True]
    b.up = False
    await health.check_all()
    assert changes == [True, False]
    b.up = True
    await health.check_all()
    assert changes == [True, False, True]
    assert health.any_usable()


async def test_a_probe_that_raises_something_unexpected_counts_as_a_failure() -> None:
    a = Probed("a")

    async def broken() -> None:
        raise RuntimeError("bug in a probe")

    a.probe = broken  # type: ignore[method-assign]
    health, changes = monitor(a, failure_threshold=1)
    await health.check_all()
    assert changes == [False]
