"""A failed call's ErrorView (calls/errors.py, the one table) as a gRPC status: the code, and a
google.rpc.Status with exactly one ErrorInfo, then RetryInfo, BadRequest and QuotaFailure as the
view has them. Transport layer.

The status travels in trailers (the message as `grpc-message`, percent-encoded; the details as
base64 in `grpc-status-details-bin`), and a standard client refuses trailers over 16 KiB (warns
over 8 KiB) and then shows the caller only RESOURCE_EXHAUSTED. The view's texts are already cut
to size; a status still over MAX_STATUS_BYTES keeps only its ErrorInfo.
tests/property/test_error_size.py holds it to under 8 KiB of trailers.
"""

from __future__ import annotations

import math

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hapaxd.calls.errors import ErrorView, view_of

DOMAIN = "hapax.gateway"
MAX_STATUS_BYTES = 3072  # the serialized google.rpc.Status (base64 on the wire: 4 KiB)


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def status_of(view: ErrorView) -> status_pb2.Status:
    """The google.rpc.Status a failed call ends with."""
    info = error_details_pb2.ErrorInfo(reason=view.reason, domain=DOMAIN, metadata=view.metadata)
    details: list[ProtoMessage] = []
    if view.retry_after is not None:
        details.append(_retry_info(view.retry_after))
    if view.violations:
        bad = error_details_pb2.BadRequest()
        for field, description in view.violations:
            bad.field_violations.add(field=field, description=description)
        details.append(bad)
    if view.quota:
        quota = error_details_pb2.QuotaFailure()
        for subject, description in view.quota:
            quota.violations.add(subject=subject, description=description)
        details.append(quota)
    status = _status(view.code, view.message, [info, *details])
    if status.ByteSize() > MAX_STATUS_BYTES:  # the view's caps should make this unreachable
        info.metadata["details_omitted"] = str(len(details))
        status = _status(view.code, view.message, [info])
    return status


def to_rpc_status(error: BaseException, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status for any exception (never UNKNOWN, never a traceback)."""
    return status_of(view_of(error, request_id))


def _status(code: str, message: str, details: list[ProtoMessage]) -> status_pb2.Status:
    status = status_pb2.Status(code=getattr(code_pb2, code), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


RETRY_AFTER_KEY = "retry-after"
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_after(view: ErrorView) -> tuple[tuple[str, str], ...]:
    """For a view with a retry delay, the same wait as trailers clients read without decoding
    the details: `retry-after` (whole seconds, rounded up, as HTTP's header) and
    `grpc-retry-pushback-ms`, which gRPC's own retry policies (service config `retryPolicy`)
    obey: the client waits that long before its next attempt."""
    wait = view.retry_after
    if wait is None:
        return ()
    return (
        (RETRY_AFTER_KEY, str(max(1, math.ceil(wait)))),
        (PUSHBACK_KEY, str(max(0, round(wait * 1000)))),
    )
