"""Why an upstream attempt failed, and what each reason means: the one failure-class policy.

Every upstream failure is classified once (adapters refine `from_http_status` with the vendor's
error body); the router then asks the class, never the status or the message:

    class              retry same  fail over  blames provider  caller sees, when all failed so
    caller             no          no         no               INVALID_ARGUMENT (call ends)
    credential         no          yes        yes              UNAVAILABLE, RetryInfo
    rate_limited       yes         yes        yes              RESOURCE_EXHAUSTED, RetryInfo
    transient          yes         yes        yes              UNAVAILABLE, RetryInfo
    timeout            no          yes        yes              UNAVAILABLE, RetryInfo
    model_unavailable  no          yes        no               FAILED_PRECONDITION
    cancelled          no          no         no               (the caller has gone)

The caller is told to retry (RetryInfo, and a retryable code) only when waiting can help: a
provider that is down, slow, rate limiting or refusing our key may recover (its breaker lets it
be tried again), but a model the provider does not serve stays unserved until the config changes.

An upstream HTTP 404 is `model_unavailable`: the configured upstream model (or path) does not
exist on that provider, which says nothing about the provider's health or the gateway's code, so
the call fails over and the breaker is not fed. "Blames provider" feeds its circuit breaker.
A bug of ours is no failure class: it is not the upstream's doing, and the call ends INTERNAL.
Plain Python.
"""

from __future__ import annotations

import enum


class FailureClass(enum.Enum):
    """Why one upstream attempt failed. Its properties are the policy (table above)."""

    CALLER = "caller"  # the request itself is bad (4xx other than those below)
    CREDENTIAL = "credential"  # our key for that provider is refused, or its quota is spent
    RATE_LIMITED = "rate_limited"  # 429: wait for Retry-After if it fits, else the next one
    TRANSIENT = "transient"  # 5xx, reset, refused, malformed body
    TIMEOUT = "timeout"  # connect / first byte / idle timeout, 408, 504
    MODEL_UNAVAILABLE = "model_unavailable"  # 404: that model is not served there
    CANCELLED = "cancelled"  # the caller went away while the attempt ran

    @property
    def retryable(self) -> bool:
        """Worth trying the same provider again (after a backoff)."""
        return self in _RETRYABLE

    @property
    def fails_over(self) -> bool:
        """Worth trying the next provider; when False the call ends with this failure."""
        return self not in _ENDS_CALL

    @property
    def counts_against_provider(self) -> bool:
        """Counted by the provider's circuit breaker; otherwise the trial place is released."""
        return self in _BLAMES_PROVIDER

    @property
    def waiting_helps(self) -> bool:
        """A later call may succeed where this attempt failed: worth a RetryInfo."""
        return self in _WAITING_HELPS

    @property
    def exhausted_code(self) -> str:
        """The gRPC status code name a call gets when every attempt failed this way."""
        return _EXHAUSTED_CODE.get(self, "UNAVAILABLE")


_RETRYABLE = frozenset({FailureClass.TRANSIENT, FailureClass.RATE_LIMITED})
_ENDS_CALL = frozenset({FailureClass.CALLER, FailureClass.CANCELLED})
_BLAMES_PROVIDER = frozenset(
    {
        FailureClass.CREDENTIAL,
        FailureClass.RATE_LIMITED,
        FailureClass.TRANSIENT,
        FailureClass.TIMEOUT,
    }
)
_WAITING_HELPS = frozenset(
    {
        FailureClass.CREDENTIAL,
        FailureClass.RATE_LIMITED,
        FailureClass.TRANSIENT,
        FailureClass.TIMEOUT,
    }
)
_EXHAUSTED_CODE = {
    FailureClass.CALLER: "INVALID_ARGUMENT",
    FailureClass.MODEL_UNAVAILABLE: "FAILED_PRECONDITION",
    FailureClass.RATE_LIMITED: "RESOURCE_EXHAUSTED",
    FailureClass.CANCELLED: "CANCELLED",
}


def from_http_status(status: int) -> FailureClass:
    """The class of an upstream HTTP error status, before the vendor's body refines it."""
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status in (401, 403):
        return FailureClass.CREDENTIAL
    if status in (408, 504):
        return FailureClass.TIMEOUT
    if status == 404:
        return FailureClass.MODEL_UNAVAILABLE
    if 400 <= status < 500:
        return FailureClass.CALLER
    return FailureClass.TRANSIENT
