"""The one mapping from GatewayError to a gRPC status code and google.rpc.Status details.

Transport layer: the servicer calls `to_rpc_status()` for every error it sends. The README's error
table is this table; tests/unit/test_status.py walks it.

Every status is kept small whatever the request: it travels in trailers (the message as
`grpc-message`, percent-encoded; the details as base64 in `grpc-status-details-bin`), and a
standard client refuses trailers over 16 KiB (warns over 8 KiB) and then shows the caller only
RESOURCE_EXHAUSTED. So at most MAX_VIOLATIONS field violations and MAX_LISTED quota entries are
sent (ErrorInfo metadata counts the rest), every text is cut to a byte budget, and a status
still over MAX_STATUS_BYTES keeps only its ErrorInfo. tests/property/test_error_size.py holds it
to under 8 KiB of trailers.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hapaxd.core.errors import (
    MAX_LISTED,
    Attempt,
    CallerRejected,
    CapabilityMissing,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
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

DOMAIN = "hapax.gateway"
DEFAULT_RETRY_DELAY = 1.0
MAX_VIOLATIONS = 20  # field violations sent in BadRequest; ErrorInfo counts the rest
MAX_MESSAGE_BYTES = 400  # the status message, UTF-8 (percent-encoding may triple it on the wire)
MAX_TEXT_BYTES = 200  # one violation's field or description, one quota description
MAX_VALUE_BYTES = 512  # one ErrorInfo metadata value
MAX_STATUS_BYTES = 3072  # the serialized google.rpc.Status (base64 on the wire: 4 KiB)


def cut(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, cut at a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


Detail = ProtoMessage  # BadRequest, RetryInfo or QuotaFailure


def _retry_info(seconds: float | None) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    seconds = DEFAULT_RETRY_DELAY if seconds is None else max(seconds, 0.0)
    whole = math.floor(seconds)
    delay.seconds, delay.nanos = whole, int((seconds - whole) * 1e9)
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _attempts_metadata(attempts: list[Attempt]) -> dict[str, str]:
    described = ",".join(a.describe() for a in attempts[:MAX_VIOLATIONS])
    if len(attempts) > MAX_VIOLATIONS:
        described += f",+{len(attempts) - MAX_VIOLATIONS}"
    metadata = {"attempts": described, "attempt_count": str(len(attempts))}
    if attempts:  # why the last one failed: "stream ended before any chunk", "HTTP 503: ..."
        metadata["last_error"] = attempts[-1].message
    return metadata


def _no_provider(
    error: NoProviderAvailable,
) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    details: list[Detail] = [_retry_info(error.retry_after)] if error.retryable else []
    code = grpc.StatusCode[error.code]
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        quota = error_details_pb2.QuotaFailure()
        for attempt in error.attempts[:MAX_LISTED]:
            quota.violations.add(
                subject=cut(f"provider:{attempt.provider}", MAX_TEXT_BYTES),
                description=cut(attempt.message, MAX_TEXT_BYTES),
            )
        details.append(quota)
    return code, _attempts_metadata(error.attempts), details


def _bad_request(error: InvalidRequest) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    bad = error_details_pb2.BadRequest()
    for v in error.violations[:MAX_VIOLATIONS]:
        bad.field_violations.add(
            field=cut(v.field, MAX_TEXT_BYTES), description=cut(v.description, MAX_TEXT_BYTES)
        )
    counts = {"violations": str(len(error.violations))}
    if len(error.violations) > MAX_VIOLATIONS:
        counts["violations_omitted"] = str(len(error.violations) - MAX_VIOLATIONS)
    return grpc.StatusCode.INVALID_ARGUMENT, counts, [bad]


def _map(error: GatewayError) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    """The table: error type -> (code, ErrorInfo metadata, further details)."""
    match error:
        case MalformedRequest():
            return grpc.StatusCode.INVALID_ARGUMENT, {}, []
        case InvalidRequest():
            return _bad_request(error)
        case ModelNotFound():
            return grpc.StatusCode.NOT_FOUND, {"model": error.model}, []
        case CapabilityMissing():
            meta = {"model": error.model, "capability": error.capability}
            return grpc.StatusCode.FAILED_PRECONDITION, meta, []
        case CallerRejected():
            return grpc.StatusCode.INVALID_ARGUMENT, _attempts_metadata(error.attempts), []
        case NoProviderAvailable():
            return _no_provider(error)
        case DeadlineExceeded():
            return grpc.StatusCode.DEADLINE_EXCEEDED, _attempts_metadata(error.attempts), []
        case StreamInterrupted():
            sent = {
                "provider": error.provider,
                "chunks_sent": str(error.chunks_sent),
                "chars_sent": str(error.chars_sent),
            }
            return grpc.StatusCode.UNAVAILABLE, sent, [_retry_info(None)]
        case Unauthenticated():
            return grpc.StatusCode.UNAUTHENTICATED, {}, []
        case PermissionDenied():
            return grpc.StatusCode.PERMISSION_DENIED, {"client": error.client, **error.subject}, []
        case RateLimited():
            quota = error_details_pb2.QuotaFailure()
            quota.violations.add(
                subject=cut(f"api_key:{error.client}", MAX_TEXT_BYTES), description=error.limit
            )
            meta = {"client": error.client, "limit": error.limit}
            return grpc.StatusCode.RESOURCE_EXHAUSTED, meta, [_retry_info(error.retry_after), quota]
        case Overloaded() | LimitsUnavailable():
            return grpc.StatusCode.UNAVAILABLE, {}, [_retry_info(error.retry_after)]
        case UpstreamError():
            return grpc.StatusCode.UNAVAILABLE, {"provider": error.provider}, [_retry_info(None)]
        case _:
            return grpc.StatusCode.INTERNAL, {}, []


def to_rpc_status(error: BaseException, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status for any exception: GatewayErrors by the table, anything else INTERNAL
    with a fixed message (never a traceback, never UNKNOWN)."""
    if isinstance(error, GatewayError):
        code, metadata, extra = _map(error)
        reason, message = error.reason, error.message
    else:
        code, metadata, extra = grpc.StatusCode.INTERNAL, {}, []
        reason, message = "INTERNAL", "internal error in the gateway"
    if code is grpc.StatusCode.INTERNAL:
        reason = "INTERNAL"
    if request_id:
        metadata = {**metadata, "request_id": request_id}
        if code is grpc.StatusCode.INTERNAL:
            message = f"{message} (request id {request_id})"
    metadata = {key: cut(value, MAX_VALUE_BYTES) for key, value in metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    status = _status(code, cut(message, MAX_MESSAGE_BYTES), [info, *extra])
    if status.ByteSize() > MAX_STATUS_BYTES:  # the caps above should make this unreachable
        info.metadata["details_omitted"] = str(len(extra))
        status = _status(code, status.message, [info])
    return status


def _status(code: grpc.StatusCode, message: str, details: list[Detail]) -> status_pb2.Status:
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


RETRY_AFTER_KEY = "retry-after"
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_after(status: status_pb2.Status) -> tuple[tuple[str, str], ...]:
    """For a status that carries RetryInfo, the same wait as trailers clients read without
    decoding the details: `retry-after` (whole seconds, rounded up, as HTTP's header) and
    `grpc-retry-pushback-ms`, which gRPC's own retry policies (service config `retryPolicy`)
    obey: the client waits that long before its next attempt."""
    for packed in status.details:
        if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            packed.Unpack(info)
            wait = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return (
                (RETRY_AFTER_KEY, str(max(1, math.ceil(wait)))),
                (PUSHBACK_KEY, str(max(0, round(wait * 1000)))),
            )
    return ()
