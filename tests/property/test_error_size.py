"""Property: no request can make an error whose trailers exceed 8 KiB (a standard grpc client
warns over 8 KiB and refuses over 16 KiB, and then shows its caller only RESOURCE_EXHAUSTED).

Measured on the wire's terms: each trailer as HPACK accounts it (name + value + 32), binary
values base64-encoded, `grpc-message` percent-encoded."""

from __future__ import annotations

import base64
import urllib.parse

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd.api.status import to_rpc_status
from hapaxd.core.errors import (
    Attempt,
    FieldViolation,
    InvalidRequest,
    ModelNotFound,
    NoProviderAvailable,
)
from hapaxd.core.failures import FailureClass

LIMIT = 8 * 1024
# grpc percent-encodes every byte of grpc-message outside printable ASCII, and '%' itself.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def trailer_bytes(error: grpc.RpcError) -> int:
    size = len("grpc-status") + 2 + 32
    size += len("grpc-message") + len(urllib.parse.quote(error.details() or "", safe=_SAFE)) + 32  # type: ignore[attr-defined]
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        wire = base64.b64encode(value) if isinstance(value, bytes) else value.encode()
        size += len(key) + len(wire) + 32
    return size


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
bad_messages = st.lists(
    st.builds(pb.Message, role=st.integers(-3, 6), content=st.sampled_from(["", "x"])),
    min_size=0,
    max_size=200,
)
requests = st.fixed_dictionaries(
    {
        "model": st.one_of(text, st.sampled_from(["", "default"])),
        "messages": bad_messages,
        "stop": st.lists(st.one_of(st.just(""), text), max_size=40),
        "user": text,
        "metadata": st.dictionaries(text, text, max_size=80),
    },
    optional={"max_tokens": st.integers(-(2**31), 0), "temperature": st.floats(width=64)},
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=requests)
def test_no_request_makes_an_error_over_8_kib_of_trailers(
    stub: pb_grpc.CompletionServiceStub, fields: dict[str, object]
) -> None:
    try:
        stub.Complete(pb.CompleteRequest(**fields), timeout=10)  # type: ignore[arg-type]
    except grpc.RpcError as error:
        assert error.code() is not grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
        assert trailer_bytes(error) < LIMIT, trailer_bytes(error)


def test_fifty_messages_with_no_role_and_no_content_reach_the_caller_whole(
    stub: pb_grpc.CompletionServiceStub,
) -> None:
    """The reported case: 100 violations used to overflow 16 KiB; now the caller sees the code,
    the first 20 violations and how many were left out."""
    from grpc_status import rpc_status

    from tests.support.status_details import unpack

    request = pb.CompleteRequest(messages=[pb.Message() for _ in range(50)])
    try:
        stub.Complete(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert trailer_bytes(error) < LIMIT
        assert len(error.details()) < 300  # type: ignore[attr-defined]
        details = unpack(rpc_status.from_call(error))  # type: ignore[arg-type]
        assert len(details["BadRequest"].field_violations) == 20
        assert details["ErrorInfo"].metadata["violations"] == "100"
        assert details["ErrorInfo"].metadata["violations_omitted"] == "80"
    else:
        raise AssertionError("an invalid request was answered")


attempts = st.lists(
    st.builds(
        Attempt,
        provider=st.text(min_size=1, max_size=100),
        failure_class=st.sampled_from(list(FailureClass)),
        message=st.text(max_size=2000),
        retry_after=st.one_of(st.none(), st.floats(0, 1e6)),
    ),
    max_size=200,
)
errors = st.one_of(
    st.builds(NoProviderAvailable, model=text, attempts=attempts),
    st.builds(ModelNotFound, model=text, known=st.lists(text, max_size=500)),
    st.builds(
        InvalidRequest,
        st.lists(st.builds(FieldViolation, text, st.text(max_size=2000)), min_size=1, max_size=500),
    ),
)


@settings(max_examples=200, deadline=None)
@given(error=errors, request_id=st.text(max_size=128))
def test_every_gateway_error_status_stays_small(error: Exception, request_id: str) -> None:
    """Errors no request can easily provoke (200 failed attempts with long upstream texts, a
    thousand known models) are capped by the same table."""
    status = to_rpc_status(error, request_id)
    encoded = len(base64.b64encode(status.SerializeToString()))
    message = len(urllib.parse.quote(status.message, safe=_SAFE))
    assert encoded + message + 200 < LIMIT
