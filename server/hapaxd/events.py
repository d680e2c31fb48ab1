"""What the domain layer reports as it works, for metrics and traces to listen to.

The router, breakers and health checker call an `Events` object; metrics.py implements it with
Prometheus, tests with a recorder. Plain Python: no grpc, no HTTP client, no prometheus.
"""

from __future__ import annotations

from typing import Protocol


class Events(Protocol):
    def attempt_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None: ...

    def first_token(self, provider: str, model: str, seconds: float) -> None: ...

    def tokens(self, provider: str, model: str, prompt: int, completion: int) -> None: ...

    def retry(self, provider: str) -> None: ...

    def failover(self, from_provider: str, to_provider: str) -> None: ...

    def breaker_transition(self, provider: str, to_state: str) -> None: ...

    def health_checked(self, provider: str, ok: bool, seconds: float) -> None: ...

    def provider_health(self, provider: str, healthy: bool) -> None: ...

    def deduplicated(self, method: str) -> None: ...


class NoEvents:
    """Listens to nothing."""

    def attempt_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        pass

    def first_token(self, provider: str, model: str, seconds: float) -> None:
        pass

    def tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        pass

    def retry(self, provider: str) -> None:
        pass

    def failover(self, from_provider: str, to_provider: str) -> None:
        pass

    def breaker_transition(self, provider: str, to_state: str) -> None:
        pass

    def health_checked(self, provider: str, ok: bool, seconds: float) -> None:
        pass

    def provider_health(self, provider: str, healthy: bool) -> None:
        pass

    def deduplicated(self, method: str) -> None:
        pass
