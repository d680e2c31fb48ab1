"""What a failed call's caller is told, whichever door it came by: the one table from a
GatewayError to an ErrorView (a canonical status code name, an ErrorInfo reason and metadata, a
retry delay, field violations, quota entries). The gRPC door turns it into a google.rpc.Status
(api/status.py), the HTTP door into OpenAI's error body (openai_http/wire.py). The README's error
table is this table; tests/unit/test_status.py walks it.

Every text is cut to a byte budget and at most MAX_VIOLATIONS field violations and MAX_LISTED
quota entries are kept (ErrorInfo metadata counts the rest), so a status stays small whatever
the request: gRPC sends it in trailers, which standard clients refuse over 16 KiB. Plain Python.
"""

from __future__ import annotations

import dataclasses

from hapaxd.core.errors import (
    MAX_LISTED,
    Attempt,
    BudgetExceeded,
    BudgetsUnavailable,
    CacheMiss,
    CallerRejected,
    CapabilityMissing,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    LedgerOff,
    LedgerUnavailable,
    LimitsUnavailable,
    MalformedRequest,
    ModelNotFound,
    NoProviderAvailable,
    Overloaded,
    PermissionDenied,
    RateLimited,
    StreamInterrupted,
    Unauthenticated,
    UpstreamError,
)

DEFAULT_RETRY_DELAY = 1.0
MAX_VIOLATIONS = 20  # field violations sent; ErrorInfo counts the rest
MAX_MESSAGE_BYTES = 400  # the message, UTF-8 (gRPC's percent-encoding may triple it)
MAX_TEXT_BYTES = 200  # one violation's field or description, one quota entry's text
MAX_VALUE_BYTES = 512  # one ErrorInfo metadata value


def cut(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, cut at a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorView:
    """A failed call as its caller sees it. `code` is a canonical status code name
    ("INVALID_ARGUMENT"); `retry_after` is None when waiting cannot help (no RetryInfo)."""

    code: str
    reason: str
    message: str
    metadata: dict[str, str]
    retry_after: float | None = None
    violations: tuple[tuple[str, str], ...] = ()  # (field, description)
    quota: tuple[tuple[str, str], ...] = ()  # (subject, description)


Table = tuple[str, dict[str, str], float | None, tuple[tuple[str, str], ...]]


def _attempts_metadata(attempts: list[Attempt]) -> dict[str, str]:
    described = ",".join(a.describe() for a in attempts[:MAX_VIOLATIONS])
    if len(attempts) > MAX_VIOLATIONS:
        described += f",+{len(attempts) - MAX_VIOLATIONS}"
    metadata = {"attempts": described, "attempt_count": str(len(attempts))}
    if attempts:  # why the last one failed: "stream ended before any chunk", "HTTP 503: ..."
        metadata["last_error"] = attempts[-1].message
    return metadata


def _quota(subject: str, description: str) -> tuple[str, str]:
    return cut(subject, MAX_TEXT_BYTES), cut(description, MAX_TEXT_BYTES)


def _no_provider(error: NoProviderAvailable) -> Table:
    code = error.code
    wait = (error.retry_after or DEFAULT_RETRY_DELAY) if error.retryable else None
    quota = (
        tuple(_quota(f"provider:{a.provider}", a.message) for a in error.attempts[:MAX_LISTED])
        if code == "RESOURCE_EXHAUSTED"
        else ()
    )
    return code, _attempts_metadata(error.attempts), wait, quota


def _map(error: GatewayError) -> Table:
    """The table: error type -> (code, ErrorInfo metadata, retry delay, quota entries)."""
    match error:
        case MalformedRequest():
            return "INVALID_ARGUMENT", {}, None, ()
        case InvalidRequest():
            counts = {"violations": str(len(error.violations))}
            if len(error.violations) > MAX_VIOLATIONS:
                counts["violations_omitted"] = str(len(error.violations) - MAX_VIOLATIONS)
            return "INVALID_ARGUMENT", counts, None, ()
        case ModelNotFound():
            return "NOT_FOUND", {"model": error.model}, None, ()
        case CacheMiss():
            return "NOT_FOUND", {"model": error.model}, None, ()
        case CapabilityMissing():
            meta = {"model": error.model, "capability": error.capability}
            return "FAILED_PRECONDITION", meta, None, ()
        case LedgerOff():
            return "FAILED_PRECONDITION", {}, None, ()
        case LedgerUnavailable():
            return "UNAVAILABLE", {}, error.retry_after, ()
        case CallerRejected():
            return "INVALID_ARGUMENT", _attempts_metadata(error.attempts), None, ()
        case NoProviderAvailable():
            return _no_provider(error)
        case DeadlineExceeded():
            return "DEADLINE_EXCEEDED", _attempts_metadata(error.attempts), None, ()
        case StreamInterrupted():
            sent = {
                "provider": error.provider,
                "chunks_sent": str(error.chunks_sent),
                "chars_sent": str(error.chars_sent),
            }
            return "UNAVAILABLE", sent, DEFAULT_RETRY_DELAY, ()
        case Unauthenticated():
            return "UNAUTHENTICATED", {}, None, ()
        case PermissionDenied():
            return "PERMISSION_DENIED", {"client": error.client, **error.subject}, None, ()
        case BudgetExceeded():
            meta = {"client": error.client, "budget": error.budget}
            quota = (_quota(f"budget:{error.budget}", error.message),)
            return "RESOURCE_EXHAUSTED", meta, error.retry_after, quota
        case RateLimited():
            meta = {"client": error.client, "limit": error.limit}
            quota = (_quota(f"api_key:{error.client}", error.limit),)
            return "RESOURCE_EXHAUSTED", meta, error.retry_after, quota
        case Overloaded() | LimitsUnavailable() | BudgetsUnavailable():
            return "UNAVAILABLE", {}, error.retry_after, ()
        case UpstreamError():
            return "UNAVAILABLE", {"provider": error.provider}, DEFAULT_RETRY_DELAY, ()
        case _:
            return "INTERNAL", {}, None, ()


def view_of(error: BaseException, request_id: str = "") -> ErrorView:
    """The ErrorView for any exception: GatewayErrors by the table, anything else INTERNAL with a
    fixed message (never a traceback)."""
    violations: tuple[tuple[str, str], ...] = ()
    if isinstance(error, GatewayError):
        code, metadata, wait, quota = _map(error)
        reason, message = error.reason, error.message
        if isinstance(error, InvalidRequest):
            violations = tuple(
                (cut(v.field, MAX_TEXT_BYTES), cut(v.description, MAX_TEXT_BYTES))
                for v in error.violations[:MAX_VIOLATIONS]
            )
    else:
        code, metadata, wait, quota = "INTERNAL", {}, None, ()
        reason, message = "INTERNAL", "internal error in the gateway"
    if code == "INTERNAL":
        reason = "INTERNAL"
    if request_id:
        metadata = {**metadata, "request_id": request_id}
        if code == "INTERNAL":
            message = f"{message} (request id {request_id})"
    metadata = {key: cut(value, MAX_VALUE_BYTES) for key, value in metadata.items()}
    if wait is not None:
        wait = max(wait, 0.0)
    return ErrorView(
        code, reason, cut(message, MAX_MESSAGE_BYTES), metadata, wait, violations, quota
    )


class CallFailed(Exception):
    """A call the pipeline ended with an error, already noted in its record: what the door
    tells the caller. (Not a GatewayError: the door encodes `view`, nothing maps it again.)"""

    def __init__(self, view: ErrorView) -> None:
        super().__init__(view.message)
        self.view = view
