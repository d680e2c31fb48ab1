"""Every error the gateway raises, and the failure classes that decide what happens next.

    GatewayError
    ├── InvalidRequest        caller sent a bad request (carries field violations)
    ├── ModelNotFound         no route for the logical model
    ├── UpstreamError         one upstream attempt failed (raised by provider adapters only)
    ├── NoProviderAvailable   every route was tried or skipped (carries the attempts)
    ├── DeadlineExceeded      the deadline budget ran out (carries the attempts)
    ├── StreamInterrupted     a stream broke after chunks reached the caller
    └── InternalError         our own bug

Plain Python: imports nothing from grpc or the HTTP client. status.py maps these to gRPC.
"""

from __future__ import annotations

import dataclasses
import enum


class FailureClass(enum.Enum):
    """Why an upstream attempt failed. Decides retry, failover, breaker counting and status."""

    CALLER = "caller"  # the request itself is bad: do not retry, do not fail over
    CREDENTIAL = "credential"  # our key for that provider is bad: fail over, count
    RATE_LIMITED = "rate_limited"  # 429: retry after Retry-After if it fits, else fail over
    TRANSIENT = "transient"  # 5xx, reset, refused, malformed body: retry, then fail over
    TIMEOUT = "timeout"  # connect / first byte / idle timeout: fail over
    CANCELLED = "cancelled"  # the caller went away: stop, never counts
    INTERNAL = "internal"  # our bug while talking upstream: fail over

    @property
    def retryable(self) -> bool:
        return self in (FailureClass.TRANSIENT, FailureClass.RATE_LIMITED)

    @property
    def fails_over(self) -> bool:
        return self not in (FailureClass.CALLER, FailureClass.CANCELLED)

    @property
    def counts_against_provider(self) -> bool:
        return self not in (FailureClass.CALLER, FailureClass.CANCELLED)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream call that did not answer, as reported to the caller."""

    provider: str
    failure_class: FailureClass
    message: str
    retry_after: float | None = None

    def describe(self) -> str:
        return f"{self.provider}:{self.failure_class.value}"


class GatewayError(Exception):
    """Base of every error the gateway turns into a gRPC status."""

    reason = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    reason = "INVALID_REQUEST"

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


class ModelNotFound(GatewayError):
    reason = "MODEL_NOT_FOUND"

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(f"unknown model {model!r}; known models: {', '.join(known)}")
        self.model = model


class UpstreamError(GatewayError):
    """One failed upstream attempt. Adapters raise only this."""

    reason = "UPSTREAM_ERROR"

    def __init__(
        self,
        failure_class: FailureClass,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.failure_class = failure_class
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    def attempt(self) -> Attempt:
        return Attempt(self.provider, self.failure_class, self.message, self.retry_after)


class NoProviderAvailable(GatewayError):
    """Every route failed or was skipped. RESOURCE_EXHAUSTED if all were rate limited."""

    reason = "NO_PROVIDER_AVAILABLE"

    def __init__(
        self, model: str, attempts: list[Attempt], retry_after: float | None = None
    ) -> None:
        tried = ", ".join(a.describe() for a in attempts) or "none usable"
        super().__init__(f"no provider could serve model {model!r} (attempts: {tried})")
        self.attempts = attempts
        self.retry_after = retry_after

    @property
    def all_rate_limited(self) -> bool:
        return bool(self.attempts) and all(
            a.failure_class is FailureClass.RATE_LIMITED for a in self.attempts
        )


class CallerRejected(GatewayError):
    """The upstream refused the request itself (4xx other than auth and 429)."""

    reason = "UPSTREAM_REJECTED_REQUEST"

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.message)
        self.attempts = [attempt]


class DeadlineExceeded(GatewayError):
    reason = "DEADLINE_EXCEEDED"

    def __init__(self, attempts: list[Attempt]) -> None:
        tried = ", ".join(a.describe() for a in attempts) or "none"
        super().__init__(f"deadline exceeded (attempts: {tried})")
        self.attempts = attempts


class StreamInterrupted(GatewayError):
    reason = "STREAM_INTERRUPTED"

    def __init__(self, provider: str, chunks_sent: int, chars_sent: int, cause: str) -> None:
        super().__init__(
            f"stream from {provider} broke after {chunks_sent} chunks "
            f"({chars_sent} characters): {cause}"
        )
        self.provider = provider
        self.chunks_sent = chunks_sent
        self.chars_sent = chars_sent


class InternalError(GatewayError):
    reason = "INTERNAL"
