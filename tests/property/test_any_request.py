"""Property: whatever a caller sends, the gateway answers OK or INVALID_ARGUMENT with details,
never UNKNOWN or INTERNAL. A real gateway (local provider) runs on its own thread's event loop;
hypothesis drives a synchronous stub against it."""

from __future__ import annotations

import grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc

floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
messages = st.lists(
    st.builds(pb.Message, role=st.integers(-3, 6), content=st.text(max_size=60)), max_size=5
)
requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["", "default", "any-model", "x" * 300]),
        "messages": messages,
        "prompt": st.text(max_size=40),
        "stop": st.lists(st.text(max_size=5), max_size=20),
        "user": st.text(max_size=10),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    },
    optional={
        "max_tokens": st.integers(-(2**31), 2**31 - 1),
        "temperature": floats.filter(lambda f: f is not None),
        "top_p": floats.filter(lambda f: f is not None),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=requests)
def test_any_request_is_ok_or_invalid_argument(
    stub: pb_grpc.CompletionServiceStub, fields: dict[str, object]
) -> None:
    request = pb.CompleteRequest(**fields)  # type: ignore[arg-type]
    try:
        reply = stub.Complete(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()  # type: ignore[attr-defined]
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None and status.details
    else:
        assert reply.route.provider == "local"
