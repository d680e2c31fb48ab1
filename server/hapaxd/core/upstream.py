"""An upstream as the router sees it: the provider adapter with its breaker, health and recent
load, which AdminService/ListProviders reports. Plain Python: no grpc, no HTTP client."""

from __future__ import annotations

import collections
import dataclasses
import statistics

from hapaxd.core.breaker import CircuitBreaker, State
from hapaxd.core.provider import Provider


@dataclasses.dataclass(eq=False)
class Upstream:
    provider: Provider
    breaker: CircuitBreaker
    weight: float = 1.0
    base_url: str = ""
    healthy: bool = True
    in_flight: int = 0
    last_error: str = ""
    latencies: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=100)
    )

    @property
    def name(self) -> str:
        return self.provider.name

    def usable(self) -> bool:
        """Healthy by its probes and not refused by its breaker (does not take a trial place)."""
        return self.healthy and self.breaker.state is not State.OPEN

    def latency_p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0
