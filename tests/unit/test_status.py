"""The one error table: every GatewayError's gRPC code and details (README lists the same)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

from hapaxd.api.status import DOMAIN, to_rpc_status
from hapaxd.core.errors import (
    Attempt,
    CallerRejected,
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoProviderAvailable,
    StreamInterrupted,
    UpstreamError,
)
from hapaxd.core.failures import FailureClass
from tests.support.status_details import unpack

RL = Attempt("a", FailureClass.RATE_LIMITED, "429", 3.0)
DOWN = Attempt("b", FailureClass.TRANSIENT, "503")

ROWS = [
    (
        InvalidRequest([FieldViolation("temperature", "bad")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        {"BadRequest"},
    ),
    (ModelNotFound("x", ["a"]), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", set()),
    (
        CallerRejected(Attempt("a", FailureClass.CALLER, "400")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UPSTREAM_REJECTED_REQUEST",
        set(),
    ),
    (
        NoProviderAvailable("m", [DOWN, RL]),
        grpc.StatusCode.UNAVAILABLE,
        "NO_PROVIDER_AVAILABLE",
        {"RetryInfo"},
    ),
    (
        NoProviderAvailable("m", [RL]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "NO_PROVIDER_AVAILABLE",
        {"RetryInfo", "QuotaFailure"},
    ),
    (DeadlineExceeded([DOWN]), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", set()),
    (
        NoProviderAvailable("m", [Attempt("a", FailureClass.MODEL_UNAVAILABLE, "404")]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_PROVIDER_AVAILABLE",
        set(),
    ),
    (
        StreamInterrupted("a", 3, 12, FailureClass.TRANSIENT, "reset"),
        grpc.StatusCode.UNAVAILABLE,
        "STREAM_INTERRUPTED",
        {"RetryInfo"},
    ),
    (
        UpstreamError(FailureClass.TRANSIENT, "a", "x"),
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_ERROR",
        {"RetryInfo"},
    ),
    (GatewayError("bug"), grpc.StatusCode.INTERNAL, "INTERNAL", set()),
    (ZeroDivisionError("secret detail"), grpc.StatusCode.INTERNAL, "INTERNAL", set()),
]


@pytest.mark.parametrize(
    ("error", "code", "reason", "extra"), ROWS, ids=[type(r[0]).__name__ for r in ROWS]
)
def test_error_table(
    error: BaseException, code: grpc.StatusCode, reason: str, extra: set[str]
) -> None:
    status = to_rpc_status(error, "req-1")
    assert status.code == getattr(code_pb2, code.name)
    assert status.code != code_pb2.UNKNOWN
    found = unpack(status)
    assert set(found) == {"ErrorInfo", *extra}
    info = found["ErrorInfo"]
    assert (info.reason, info.domain, info.metadata["request_id"]) == (reason, DOMAIN, "req-1")
    if isinstance(error, GatewayError):
        assert status.message.startswith(error.message)
    else:
        assert "secret detail" not in status.message and "Traceback" not in status.message


def test_attempts_and_retry_delay_are_in_the_details() -> None:
    found = unpack(to_rpc_status(NoProviderAvailable("m", [RL], retry_after=2.5)))
    assert found["ErrorInfo"].metadata["attempts"] == "a:rate_limited"
    assert found["ErrorInfo"].metadata["attempt_count"] == "1"
    delay = found["RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (2, 500_000_000)
    assert found["QuotaFailure"].violations[0].subject == "provider:a"


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (FailureClass.TRANSIENT, "the upstream up closed the stream after 3 chunks"),
        (FailureClass.TIMEOUT, "the upstream up went silent after 3 chunks"),
        (FailureClass.RATE_LIMITED, "the upstream up sent a rate-limit error after 3 chunks"),
    ],
)
def test_a_broken_stream_says_what_happened_in_one_line_and_keeps_its_cause_for_the_log(
    failure: FailureClass, said: str
) -> None:
    cause = "TransferEncodingError: 400, message='Not enough data'. ConnectionResetError(104)"
    error = StreamInterrupted("up", 3, 12, failure, cause)
    status = to_rpc_status(error, "r-1")
    assert status.message == said
    assert error.cause == cause
    sent = status.SerializeToString().decode("latin-1")  # message and every detail
    assert "ConnectionReset" not in sent and "Not enough" not in sent, "the cause is not sent"
    one = StreamInterrupted("up", 1, 4, failure, cause)
    assert one.message.endswith("after 1 chunk")
