"""HapaxError: a failed call with its google.rpc.Status details decoded (ErrorInfo, BadRequest,
RetryInfo, QuotaFailure), so callers read `reason`, `retry_after` or `violations` instead of
unpacking Any messages."""

from __future__ import annotations

import dataclasses

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclasses.dataclass(frozen=True)
class Violation:
    field: str
    description: str


class HapaxError(Exception):
    """A call the gateway (or the channel) ended with a non-OK status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
        violations: tuple[Violation, ...] = (),
        quota: tuple[Violation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}{f' {reason}' if reason else ''}: {message}")
        self.code = code
        self.message = message
        self.reason = reason  # ErrorInfo.reason, e.g. NO_PROVIDER_AVAILABLE, RATE_LIMITED
        self.metadata = metadata or {}  # ErrorInfo.metadata: request_id, attempts, ...
        self.retry_after = retry_after  # RetryInfo.retry_delay, seconds
        self.violations = violations  # BadRequest.field_violations
        self.quota = quota  # QuotaFailure.violations (subject, description)

    @property
    def request_id(self) -> str:
        return self.metadata.get("request_id", "")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> HapaxError:
        """The error a failed grpc call raised, with its rich status read from the trailers."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = (error.details() if hasattr(error, "details") else "") or ""
        status = rpc_status.from_call(error)
        if status is None:
            return cls(code, message)
        found: dict[str, object] = {}
        for packed in status.details:
            for kind in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.RetryInfo,
                error_details_pb2.QuotaFailure,
            ):
                if packed.Is(kind.DESCRIPTOR):
                    detail = kind()
                    packed.Unpack(detail)
                    found[kind.__name__] = detail
        info = found.get("ErrorInfo")
        bad = found.get("BadRequest")
        retry = found.get("RetryInfo")
        quota = found.get("QuotaFailure")
        delay = retry.retry_delay if isinstance(retry, error_details_pb2.RetryInfo) else None
        return cls(
            code,
            status.message or message,
            reason=info.reason if isinstance(info, error_details_pb2.ErrorInfo) else "",
            metadata=dict(info.metadata) if isinstance(info, error_details_pb2.ErrorInfo) else {},
            retry_after=delay.seconds + delay.nanos / 1e9 if delay is not None else None,
            violations=tuple(Violation(v.field, v.description) for v in bad.field_violations)
            if isinstance(bad, error_details_pb2.BadRequest)
            else (),
            quota=tuple(Violation(v.subject, v.description) for v in quota.violations)
            if isinstance(quota, error_details_pb2.QuotaFailure)
            else (),
        )
