"""The one mapping from GatewayError to a gRPC status code and google.rpc.Status details.

Transport layer: the servicer calls `to_rpc_status()` for every error it sends. The README's error
table is this table; tests/e2e/test_error_mapping.py walks it.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hapaxd.errors import (
    Attempt,
    CallerRejected,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoProviderAvailable,
    StreamInterrupted,
    UpstreamError,
)

DOMAIN = "hapax.gateway"
DEFAULT_RETRY_DELAY = 1.0

Detail = ProtoMessage  # BadRequest, RetryInfo or QuotaFailure


def _retry_info(seconds: float | None) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    seconds = DEFAULT_RETRY_DELAY if seconds is None else max(seconds, 0.0)
    whole = math.floor(seconds)
    delay.seconds, delay.nanos = whole, int((seconds - whole) * 1e9)
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _attempts_metadata(attempts: list[Attempt]) -> dict[str, str]:
    return {
        "attempts": ",".join(a.describe() for a in attempts),
        "attempt_count": str(len(attempts)),
    }


def _no_provider(
    error: NoProviderAvailable,
) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    details: list[Detail] = [_retry_info(error.retry_after)]
    if error.all_rate_limited:
        quota = error_details_pb2.QuotaFailure()
        for attempt in error.attempts:
            quota.violations.add(
                subject=f"provider:{attempt.provider}", description=attempt.message
            )
        details.append(quota)
        return grpc.StatusCode.RESOURCE_EXHAUSTED, _attempts_metadata(error.attempts), details
    return grpc.StatusCode.UNAVAILABLE, _attempts_metadata(error.attempts), details


def _bad_request(error: InvalidRequest) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    bad = error_details_pb2.BadRequest()
    for v in error.violations:
        bad.field_violations.add(field=v.field, description=v.description)
    return grpc.StatusCode.INVALID_ARGUMENT, {}, [bad]


def _map(error: GatewayError) -> tuple[grpc.StatusCode, dict[str, str], list[Detail]]:
    """The table: error type -> (code, ErrorInfo metadata, further details)."""
    match error:
        case InvalidRequest():
            return _bad_request(error)
        case ModelNotFound():
            return grpc.StatusCode.NOT_FOUND, {"model": error.model}, []
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
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in [info, *extra]:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status
