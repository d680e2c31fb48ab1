"""Reading google.rpc.Status details back from a failed call, as a client would."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclasses.dataclass
class Details:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None
    quota: error_details_pb2.QuotaFailure | None

    @property
    def violated_fields(self) -> list[str]:
        return [v.field for v in self.bad_request.field_violations] if self.bad_request else []


def unpack(status: status_pb2.Status) -> dict[str, Any]:
    """Every known detail of a google.rpc.Status by type name; a type twice is an error."""
    found: dict[str, Any] = {}
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
                assert kind.__name__ not in found, f"two {kind.__name__} details"
                found[kind.__name__] = detail
    return found


def details_of(error: grpc.aio.AioRpcError) -> Details:
    """The rich status of a failed call: every detail unpacked, one ErrorInfo required."""
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    found = unpack(status)
    return Details(
        code=error.code(),
        message=status.message,
        info=found.get("ErrorInfo"),
        bad_request=found.get("BadRequest"),
        retry=found.get("RetryInfo"),
        quota=found.get("QuotaFailure"),
    )
