"""What the domain reports as it works: one frozen dataclass per event, handed to listeners.

A listener is any callable taking an Event (metrics, span events, the log, the health monitor, a
test's list.append). The router, breakers, health monitor and deduplicator each hold a sequence of
listeners and call `emit(listeners, event)`. Adding an event is one dataclass here and one `case`
in each listener that cares (observability/listeners.py). Plain Python: no grpc, no HTTP client,
no prometheus, no opentelemetry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptFinished:
    """One upstream attempt ended: `outcome` is "success" or the failure class's value."""

    provider: str
    model: str  # the logical model
    outcome: str
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class FirstChunk:
    """A stream's first chunk arrived, `seconds` after its attempt was sent."""

    provider: str
    model: str
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class TokensUsed:
    """Tokens an upstream reported for one answer."""

    provider: str
    model: str
    prompt: int
    completion: int


@dataclasses.dataclass(frozen=True, slots=True)
class Retried:
    """The same provider is tried again after a failed attempt."""

    provider: str


@dataclasses.dataclass(frozen=True, slots=True)
class FailedOver:
    """A call moved from one provider to another."""

    from_provider: str
    to_provider: str


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerChanged:
    """A provider's circuit breaker entered `state` ("closed", "half_open" or "open")."""

    provider: str
    state: str


@dataclasses.dataclass(frozen=True, slots=True)
class HealthChecked:
    """One active health probe of a provider ended."""

    provider: str
    ok: bool
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class HealthChanged:
    """A provider became healthy or unhealthy by its probes."""

    provider: str
    healthy: bool
    why: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Deduplicated:
    """A call joined an identical call already in flight instead of going upstream."""

    method: str  # "Complete" or "StreamComplete"


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitHit:
    """A call was refused because its key is over `limit` (see errors.RateLimited)."""

    client: str
    limit: str


@dataclasses.dataclass(frozen=True, slots=True)
class LimiterUnavailable:
    """The shared limit store (Redis) could not be asked; the call was admitted anyway
    (`admitted`, fail open) or refused (fail closed)."""

    backend: str
    admitted: bool
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetStoreUnavailable:
    """The shared budget store (Redis) could not be asked; the call was admitted unchecked
    (`admitted`, fail open) or refused (fail closed)."""

    backend: str
    admitted: bool
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class CacheLookup:
    """A call that uses the response cache looked it up (or bypassed it): `result` is hit,
    semantic_hit, miss, refresh or bypass."""

    result: str


@dataclasses.dataclass(frozen=True, slots=True)
class CacheStored:
    """An answer was stored in the response cache: its encoded size, and the bytes the
    in-process store now holds (0 for Redis)."""

    size: int
    held: int


@dataclasses.dataclass(frozen=True, slots=True)
class CacheEvicted:
    """The in-process cache evicted `count` entries to stay within its bound; `size` is what
    it holds now."""

    count: int
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class CacheFailed:
    """The cache's store could not do `operation` (get, put, decode, embed): a miss."""

    backend: str
    operation: str
    why: str


Event = (
    AttemptFinished
    | FirstChunk
    | TokensUsed
    | Retried
    | FailedOver
    | BreakerChanged
    | HealthChecked
    | HealthChanged
    | Deduplicated
    | RateLimitHit
    | LimiterUnavailable
    | BudgetStoreUnavailable
    | CacheLookup
    | CacheStored
    | CacheEvicted
    | CacheFailed
)
Listener = Callable[[Event], None]
Listeners = Sequence[Listener]


def emit(listeners: Listeners, event: Event) -> None:
    """Hand `event` to each listener in order. A listener must not raise; one that does is a bug
    in it, and the error goes to the emitter's caller like any other bug."""
    for listener in listeners:
        listener(event)
