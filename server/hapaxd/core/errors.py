"""Every error the gateway raises, as one tree; the caller sees each as api/status.py maps it.

    GatewayError
    ├── MalformedRequest      the request bytes are not the method's protobuf message
    ├── InvalidRequest        caller sent a bad request (carries field violations)
    ├── ModelNotFound         no route for the logical model
    ├── CapabilityMissing     no provider of the model can do what the request needs
    ├── UpstreamError         one upstream attempt failed (raised by provider adapters only)
    ├── NoProviderAvailable   every route was tried or skipped (carries the attempts)
    ├── CallerRejected        an upstream refused the request itself (carries the attempt)
    ├── DeadlineExceeded      the deadline budget ran out (carries the attempts)
    ├── StreamInterrupted     a stream broke after chunks reached the caller
    ├── Unauthenticated       no valid API key (ApiKeyMissing, ApiKeyInvalid)
    ├── PermissionDenied      the key may not do this (ModelNotAllowed, MetadataKeyNotAllowed,
    │                         AdminKeyRequired)
    ├── RateLimited           a key is over one of its limits (carries which, and the wait)
    ├── LimitsUnavailable     the shared limit store cannot be asked and the mode is fail closed
    ├── BudgetsUnavailable    the shared budget store cannot be asked and the mode is fail closed
    ├── CacheMiss             cache-control only-if-cached, and the cache has no answer
    └── Overloaded            the gateway sheds the call: too many calls in flight

Anything else that escapes is our own bug, and the caller sees INTERNAL. Why an attempt failed is
a FailureClass (core/failures.py). Plain Python: imports nothing from grpc or the HTTP client;
api/status.py maps these to gRPC.
"""

from __future__ import annotations

import dataclasses

from hapaxd.core.failures import FailureClass

MAX_LISTED = 10  # names listed in an error message; the rest are counted


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


def tried(attempts: list[Attempt]) -> str:
    """The attempts for an error message, each with why it failed, capped in count and length."""
    if not attempts:
        return "no provider was usable"
    listed = "; ".join(
        f"{a.provider}: {a.failure_class.value}: {a.message[:120]}" for a in attempts[:MAX_LISTED]
    )
    more = f"; and {len(attempts) - MAX_LISTED} more" if len(attempts) > MAX_LISTED else ""
    return f"attempts: {listed}{more}"


class GatewayError(Exception):
    """Base of every error the gateway turns into a gRPC status."""

    reason = "INTERNAL"
    # Time the failed call spent waiting on upstreams (the router notes it), for its record.
    upstream_seconds = 0.0

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequest(GatewayError):
    """The request frame could not be decoded (bad UTF-8, a truncated varint, wire type 7...)."""

    reason = "MALFORMED_REQUEST"

    def __init__(self, message_type: str, why: str) -> None:
        # protobuf's text repeats the type: "Error parsing message with type 'X': <why>"
        why = why.rpartition("': ")[2]
        super().__init__(f"the request is not a valid {message_type} message: {why[:200]}")


class InvalidRequest(GatewayError):
    """Every bad field of a request; the message names the count and the first one only (the
    list itself travels once, in BadRequest details)."""

    reason = "INVALID_REQUEST"

    def __init__(self, violations: list[FieldViolation]) -> None:
        first = violations[0] if violations else FieldViolation("request", "invalid")
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"invalid request: {first.field[:100]}: {first.description[:200]}{more}")
        self.violations = violations


class ModelNotFound(GatewayError):
    reason = "MODEL_NOT_FOUND"

    def __init__(self, model: str, known: list[str]) -> None:
        names = ", ".join(known[:MAX_LISTED])
        if len(known) > MAX_LISTED:
            names += f" and {len(known) - MAX_LISTED} more"
        super().__init__(f"unknown model {model[:100]!r}; known models: {names}")
        self.model = model


class CapabilityMissing(GatewayError):
    """The model has routes, but none of its providers is declared able to do something the
    request needs (tools, images, structured output, streaming)."""

    reason = "CAPABILITY_MISSING"

    def __init__(self, model: str, capability: str) -> None:
        super().__init__(
            f"no provider of model {model[:100]!r} supports {capability}; see ModelService"
            " ListModels, or the provider's capabilities in the gateway's config"
        )
        self.model = model
        self.capability = capability


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


def stream_ended_early(provider: str, chunks_sent: int) -> UpstreamError:
    """The upstream's body ended before its closing event: the one wording every adapter uses,
    so the caller's attempts and the access log say whether anything had arrived."""
    why = (
        "stream ended before any chunk"
        if chunks_sent == 0
        else f"stream ended early, after {chunks_sent} chunks, with no closing event"
    )
    return UpstreamError(FailureClass.TRANSIENT, provider, why)


class NoProviderAvailable(GatewayError):
    """Every route failed or was skipped (`skipped`: some provider was not tried, its breaker
    open or its health check failing). RESOURCE_EXHAUSTED if all were rate limited."""

    reason = "NO_PROVIDER_AVAILABLE"

    def __init__(
        self,
        model: str,
        attempts: list[Attempt],
        retry_after: float | None = None,
        skipped: bool = False,
    ) -> None:
        super().__init__(f"no provider could serve model {model[:100]!r} ({tried(attempts)})")
        self.attempts = attempts
        self.retry_after = retry_after
        self.skipped = skipped

    @property
    def code(self) -> str:
        """The gRPC status code name for the caller: what the failure class says when every
        provider was tried and failed the same way (all rate limited: RESOURCE_EXHAUSTED; all
        without the model: FAILED_PRECONDITION), else UNAVAILABLE."""
        classes = {a.failure_class for a in self.attempts}
        if len(classes) == 1 and not self.skipped:
            return classes.pop().exhausted_code
        return "UNAVAILABLE"

    @property
    def retryable(self) -> bool:
        """Whether waiting can help: a skipped provider may come back, and so may one that
        failed in a class where waiting helps (core/failures.py); one without the model not."""
        return (
            self.skipped
            or not self.attempts
            or any(a.failure_class.waiting_helps for a in self.attempts)
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
        super().__init__(f"deadline exceeded ({tried(attempts)})")
        self.attempts = attempts


class StreamInterrupted(GatewayError):
    """A stream broke after chunks reached the caller. Its message is one line in the gateway's
    words; what the upstream or the connection said is its `cause`, for the log line only."""

    reason = "STREAM_INTERRUPTED"

    def __init__(
        self, provider: str, chunks_sent: int, chars_sent: int, failure: FailureClass, cause: str
    ) -> None:
        chunks = f"{chunks_sent} chunk{'' if chunks_sent == 1 else 's'}"
        super().__init__(
            f"the upstream {provider} {_BROKE.get(failure, 'closed the stream')} after {chunks}"
        )
        self.provider = provider
        self.chunks_sent = chunks_sent
        self.chars_sent = chars_sent
        self.cause = cause


_BROKE = {  # how a stream's upstream broke it off, by the failure's class; else "closed the stream"
    FailureClass.TIMEOUT: "went silent",
    FailureClass.RATE_LIMITED: "sent a rate-limit error",
    FailureClass.CREDENTIAL: "sent a credential error",
}


class Unauthenticated(GatewayError):
    """The call carries no API key the gateway knows. The message never repeats what was sent."""

    reason = "UNAUTHENTICATED"


class ApiKeyMissing(Unauthenticated):
    reason = "API_KEY_MISSING"

    def __init__(self, why: str = "") -> None:
        super().__init__(
            why or "no API key: send metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"
        )


class ApiKeyInvalid(Unauthenticated):
    reason = "API_KEY_INVALID"

    def __init__(self) -> None:
        super().__init__("the API key is not valid")


class PermissionDenied(GatewayError):
    """A valid key asked for what its policy does not allow; `client` is the key id."""

    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, client: str) -> None:
        super().__init__(message)
        self.client = client
        self.subject: dict[str, str] = {}  # what was refused, for ErrorInfo metadata


class ModelNotAllowed(PermissionDenied):
    reason = "MODEL_NOT_ALLOWED"

    def __init__(self, model: str, client: str) -> None:
        super().__init__(f"API key {client!r} may not use model {model[:100]!r}", client)
        self.subject = {"model": model}


class MetadataKeyNotAllowed(PermissionDenied):
    reason = "METADATA_KEY_NOT_ALLOWED"

    def __init__(self, keys: list[str], client: str) -> None:
        listed = ", ".join(repr(k[:60]) for k in keys[:MAX_LISTED])
        more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
        super().__init__(f"API key {client!r} may not send metadata {listed}{more}", client)
        self.subject = {"metadata_keys": ",".join(keys[:MAX_LISTED])}


class AdminKeyRequired(PermissionDenied):
    reason = "ADMIN_KEY_REQUIRED"

    def __init__(self, service: str, client: str) -> None:
        super().__init__(f"{service} needs a key with admin: true; {client!r} is not one", client)
        self.subject = {"service": service}


class BudgetExceeded(GatewayError):
    """A call whose worst case does not fit a budget of its key or team (admission/budgets.py);
    `retry_after`: seconds until the budget's window resets (None for a total budget)."""

    reason = "BUDGET_EXCEEDED"

    def __init__(self, budget: str, client: str, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.budget, self.client, self.retry_after = budget, client, retry_after


class LedgerOff(GatewayError):
    """A usage query while the usage ledger is off: there is no usage to answer with."""

    reason = "USAGE_LEDGER_OFF"

    def __init__(self) -> None:
        super().__init__("the usage ledger is off (ledger.enabled: false): no usage is kept")


class LedgerUnavailable(GatewayError):
    """A usage query while the usage ledger's database cannot be asked (PostgreSQL down or out
    of reach, SQLite locked, a database keeping another currency). `cause`, the store's error,
    goes to the log, never to the caller."""

    reason = "USAGE_LEDGER_UNAVAILABLE"
    retry_after = 5.0

    def __init__(self, cause: str) -> None:
        super().__init__("the usage ledger's database cannot be asked now; retry later")
        self.cause = cause


class RateLimited(GatewayError):
    """A key went over one of its limits: `limit` is "requests_per_minute", "tokens_per_minute"
    or "concurrent_streams"; `retry_after` is how long until it would be admitted (seconds)."""

    reason = "RATE_LIMITED"

    def __init__(self, client: str, limit: str, retry_after: float, why: str = "") -> None:
        super().__init__(
            f"API key {client!r} is over its {limit.replace('_', ' ')} limit"
            + (f" ({why})" if why else "")
            + f"; retry in {retry_after:.2f}s"
        )
        self.client = client
        self.limit = limit
        self.retry_after = retry_after


class Overloaded(GatewayError):
    """The gateway has as many calls in flight as `server.max_in_flight` allows."""

    reason = "OVERLOADED"

    def __init__(self, in_flight: int, retry_after: float) -> None:
        super().__init__(f"the gateway is at its limit of {in_flight} calls in flight; retry soon")
        self.retry_after = retry_after


class LimitsUnavailable(GatewayError):
    """The store of the rate limits (Redis) could not be asked, and rate_limit.on_store_error
    is "closed": the call is refused rather than admitted unchecked."""

    reason = "RATE_LIMITER_UNAVAILABLE"
    retry_after = 1.0

    def __init__(self, backend: str) -> None:
        super().__init__(f"the rate limiter ({backend}) cannot be reached; retry soon")
        self.backend = backend


class BudgetsUnavailable(GatewayError):
    """The store of the budgets (Redis) could not be asked, and budgets.on_store_error is
    "closed" (the default): a budgeted call is refused rather than admitted unchecked."""

    reason = "BUDGETS_UNAVAILABLE"
    retry_after = 1.0

    def __init__(self, backend: str) -> None:
        super().__init__(f"the budgets' store ({backend}) cannot be reached; retry soon")
        self.backend = backend


class CacheMiss(GatewayError):
    """The caller asked for an answer from the response cache only (cache-control
    only-if-cached) and the cache has none for its request (or the request cannot be cached)."""

    reason = "CACHE_MISS"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"no cached answer for this request to {model[:100]!r} (cache-control: "
            "only-if-cached): send it without only-if-cached to ask a provider"
        )
        self.model = model
