"""Bytes no gRPC library would send, and limits a production server sets: each ends as a definite
status for that call (or a GOAWAY for that connection), and the gateway keeps answering others.

A real grpc.aio gateway on 127.0.0.1, driven by a real grpc channel or by a raw HTTP/2 client
(tests/h2client.py) where a library would refuse to misbehave.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import grpc
import h2.errors
import h2.events
import h2.settings
import pytest
from grpc_status import rpc_status

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import AccessLog, Gateway, StartGateway, make_settings
from tests.support.h2client import H2Client
from tests.support.status_details import unpack

COMPLETE = "/hapax.v1.CompletionService/Complete"
STREAM = "/hapax.v1.CompletionService/StreamComplete"
HEALTH = "/grpc.health.v1.Health/Check"
REFUSED = str(int(h2.errors.ErrorCodes.REFUSED_STREAM))

UNDECODABLE = {
    # field 1 (model; the health service name) is two bytes that are not UTF-8
    "bad_utf8_in_a_string": b"\x0a\x02\xff\xfe",
    "truncated_varint": b"\x20\xff\xff",  # max_tokens whose varint never ends
    "wire_type_7": b"\x0f\x00",
    "random_bytes": bytes.fromhex("9c4e2a7711f0b3d5c6e8a1"),
    "length_past_the_end": b"\x1a\x40abc",
}


def errors_counted(gateway: Gateway, reason: str) -> float:
    registry = gateway.app.observability.metrics.registry
    return registry.get_sample_value("hapax_errors_total", {"type": reason}) or 0.0


async def call_raw(channel: grpc.aio.Channel, path: str, payload: bytes, **kw: Any) -> Any:
    """Send exactly `payload` as the request message (no serializer)."""
    if path == STREAM:
        return [m async for m in channel.unary_stream(path)(payload, **kw)]
    return await channel.unary_unary(path)(payload, **kw)


@pytest.mark.parametrize("path", [COMPLETE, STREAM, HEALTH])
@pytest.mark.parametrize("name", list(UNDECODABLE))
async def test_an_undecodable_request_is_invalid_argument_with_error_info(
    gateway: Gateway, access_log: AccessLog, caplog: pytest.LogCaptureFixture, path: str, name: str
) -> None:
    before = errors_counted(gateway, "MALFORMED_REQUEST")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_raw(
                gateway.channel, path, UNDECODABLE[name], metadata=(("x-request-id", "bad-1"),)
            )
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid" in (error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None
    details = unpack(status)
    info = details["ErrorInfo"]
    assert info.reason == "MALFORMED_REQUEST"
    assert info.metadata["request_id"] == "bad-1"
    # No traceback anywhere, nothing at error level: a caller's garbage is not our bug.
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    if path == HEALTH:
        return  # health calls are not in the access log or the request metrics
    # The call's line and its metrics are written together once it has ended, which may be
    # just after the caller has read the status: wait for the line, then read the counter.
    await access_log.wait_for(1)
    assert errors_counted(gateway, "MALFORMED_REQUEST") == before + 1
    [line] = access_log.records
    assert line.levelno == logging.WARNING
    assert vars(line)["code"] == "INVALID_ARGUMENT"
    assert vars(line)["error_reason"] == "MALFORMED_REQUEST"


async def test_a_message_over_the_size_limit_is_grpcs_own_resource_exhausted(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(make_settings(server={"max_message_bytes": 4096}))
    big = pb.CompleteRequest(prompt="x" * 5000).SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(gateway.channel, COMPLETE, big)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="small"))
    assert reply.text


async def test_metadata_over_the_limit_is_resource_exhausted_for_that_call_only(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(make_settings(server={"max_metadata_bytes": 2048}))
    padding = os.urandom(3000).hex()  # random, so HPACK cannot shrink it
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(
            pb.CompleteRequest(prompt="hi"), metadata=(("x-padding", padding),), timeout=5
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert padding not in (caught.value.details() or "")
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="small"))
    assert reply.text


async def test_the_server_advertises_its_stream_limit_and_refuses_streams_past_it(
    start_gateway: StartGateway,
) -> None:
    settings = make_settings(
        server={"max_concurrent_streams": 8},
        providers=[
            {
                "name": "local",
                "type": "local",
                "models": {"*": "local"},
                "options": {"chunk_delay": "0.2"},
            }
        ],
    )
    gateway = await start_gateway(settings)
    client = H2Client(gateway.address)
    try:
        await asyncio.to_thread(client.read, 1.0)
        assert client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 8
        request = pb.StreamCompleteRequest(prompt="a b c d").SerializeToString()
        # Ignore the advertised limit, as a flooding client would: 40 streams at once.
        client.ignore_stream_limit()
        sids = {client.start(STREAM, request) for _ in range(40)}
        ended = await asyncio.to_thread(client.read_until_closed, sids, 20.0)
        refused = [s for s, h in ended.items() if ("reset", REFUSED) in h]
        served = [s for s, h in ended.items() if ("grpc-status", "0") in h]
        assert len(served) >= 8
        assert refused or client.closed, ended
    finally:
        client.close()
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="after the flood"))
    assert reply.text


async def test_a_flood_of_reset_streams_costs_only_those_streams(gateway: Gateway) -> None:
    """Rapid reset (CVE-2023-44487): open and RST_STREAM thousands of calls on one connection."""
    client = H2Client(gateway.address)
    request = pb.StreamCompleteRequest(prompt="reset me").SerializeToString()

    def flood() -> None:
        for _ in range(3000):
            if client.closed:
                return
            try:
                sid = client.start(STREAM, request)
                client.reset(sid)
            except Exception:  # the server may GOAWAY this connection: fine, it is the abuser's
                return

    try:
        await asyncio.to_thread(flood)
    finally:
        client.close()
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="still fine"), timeout=10)
    assert reply.text
    active = gateway.app.observability.metrics.registry.get_sample_value(
        "hapax_grpc_active_requests", {"method": "StreamComplete"}
    )
    async with asyncio.timeout(10):
        while active:
            await asyncio.sleep(0.05)
            active = gateway.app.observability.metrics.registry.get_sample_value(
                "hapax_grpc_active_requests", {"method": "StreamComplete"}
            )
