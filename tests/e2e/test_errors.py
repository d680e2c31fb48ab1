"""Bad input and failures come back as gRPC statuses with google.rpc details, over the wire."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import AccessLog, Gateway, StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support.status_details import details_of

HELLO = pb.Message(role=pb.ROLE_USER, content="hello")


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ["messages"]),
        ({"messages": [pb.Message(role=pb.ROLE_UNSPECIFIED, content="x")]}, ["messages[0].role"]),
        ({"messages": [pb.Message(role=7, content="x")]}, ["messages[0].role"]),
        ({"messages": [HELLO], "max_tokens": -1}, ["max_tokens"]),
        ({"messages": [HELLO], "temperature": 3.0}, ["temperature"]),
        ({"messages": [HELLO], "temperature": math.nan}, ["temperature"]),
        ({"messages": [HELLO], "top_p": 1.5}, ["top_p"]),
        ({"prompt": "x" * 2001}, ["prompt"]),
    ],
    ids=[
        "empty",
        "unspecified-role",
        "unknown-role",
        "negative-max-tokens",
        "temperature-range",
        "nan",
        "top-p",
        "oversized",
    ],
)
@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
async def test_bad_input_is_invalid_argument_with_field_violations(
    start_gateway: StartGateway, rpc: str, fields: dict[str, Any], violations: list[str]
) -> None:
    gateway = await start_gateway(make_settings(server={"max_content_chars": 2000}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "Complete":
            await gateway.stub.Complete(pb.CompleteRequest(**fields))
        else:
            [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(**fields))]
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violated_fields == violations
    assert details.info is not None and details.info.reason == "INVALID_REQUEST"
    assert details.info.metadata["request_id"]


async def test_unknown_model_is_not_found(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[{"name": "local", "type": "local", "models": {"default": "local"}}]
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(pb.CompleteRequest(prompt="x", model="gpt-17"))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.info is not None
    assert (details.info.reason, details.info.metadata["model"]) == ("MODEL_NOT_FOUND", "gpt-17")


class BrokenProvider:
    """Our own bug inside a provider: not an UpstreamError."""

    name, type = "local", "local"

    async def complete(self, request: object) -> None:
        raise KeyError("internal detail that must not leak")

    async def stream(self, request: object):  # type: ignore[no-untyped-def]
        raise KeyError("internal detail that must not leak")
        yield

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
async def test_our_own_bug_is_internal_never_unknown_and_never_a_traceback(
    gateway: Gateway, rpc: str
) -> None:
    gateway.app.upstreams[0].provider = BrokenProvider()  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "Complete":
            await gateway.stub.Complete(pb.CompleteRequest(prompt="x"))
        else:
            [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x"))]
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INTERNAL
    assert "internal detail" not in details.message
    assert "Traceback" not in (caught.value.details() or "")
    assert details.info is not None and details.info.reason == "INTERNAL"


async def test_a_stream_the_upstream_ends_before_any_chunk_says_so_in_attempts_and_log(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, access_log: AccessLog
) -> None:
    fake_upstream.set_default(Reply(text="", chunks=1, end_early=True))
    up = {
        "name": "up",
        "type": "openai",
        "base_url": fake_upstream.base_url("openai"),
        "models": {"*": "*"},
    }
    gateway = await start_gateway(make_settings(providers=[up]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x"))]
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.info is not None and details.info.reason == "NO_PROVIDER_AVAILABLE"
    assert "stream ended before any chunk" in details.info.metadata["last_error"]
    assert "stream ended before any chunk" in details.message
    await access_log.wait_for(1)
    assert "stream ended before any chunk" in vars(access_log.records[0])["error"]
