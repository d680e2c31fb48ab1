"""Callers that vanish mid-call cost the gateway nothing but that call.

The regression behind this file: grpcio 1.85's `ServicerContext.peer()`, read after the caller's
transport was gone (the access log read it at the end of each call), dereferenced freed memory
and killed the whole process with SIGSEGV, usually within two 2-second h2load runs that drop
their connections with streams in flight. Now everything is read from the context once, when the
call begins (hapaxd.api.call.open_record). The gateway runs in its own process here, so a crash
in grpc's C core shows as that process ending.
"""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support.h2client import H2Client, grpc_frame
from tests.support.processes import GatewayProcess, gateway_process, run

STREAM = "/hapax.v1.CompletionService/StreamComplete"
UNARY = "/hapax.v1.CompletionService/Complete"
COMMON = """\
server: {address: "{address}", grace_period: 0.5s}
metrics: {enabled: false}
logging: {level: info}  # the access log line is where the old crash was
health_check: {enabled: false}
default_model: default
auth: {enabled: false}
"""
LOCAL = (
    COMMON
    + """\
providers: [{name: local, type: local, models: {"*": local}}]
"""
)
OPENAI = (
    COMMON
    + """\
providers: [{name: up, type: openai, base_url: "BASE", models: {"*": gpt-test}}]
"""
)


async def h2load(gateway: GatewayProcess, path: str, frame: pathlib.Path, seconds: int) -> str:
    """h2load with 16 connections, one stream each, for `seconds`; at the end it drops every
    connection with calls still in flight."""
    _code, out, err = await run(
        "h2load",
        "-c16",
        "-m1",
        "-D",
        str(seconds),
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://{gateway.address}{path}",
        within=seconds + 20,
    )
    return out + err


def vanish_mid_stream(address: str, n: int) -> None:
    """n raw HTTP/2 connections, each with streams open, closed with a TCP reset mid-call."""
    request = pb.StreamCompleteRequest(prompt="count to twenty please").SerializeToString()
    for _ in range(n):
        client = H2Client(address)
        for _ in range(4):
            client.start(STREAM, request)
        client.start(UNARY, pb.CompleteRequest(prompt="hi").SerializeToString())
        client.read(until=0.01)
        client.abort()


async def still_answers(gateway: GatewayProcess) -> None:
    assert gateway.alive, (
        f"gateway died: exit {gateway.proc.returncode}\n{gateway.output()[-2000:]}"
    )
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        reply = await stub.Complete(pb.CompleteRequest(prompt="still there?"), timeout=10)
        assert reply.text
        chunks = [m async for m in stub.StreamComplete(pb.StreamCompleteRequest(prompt="and?"))]
        assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP


@pytest.mark.parametrize("provider", ["local", "openai"])
async def test_callers_dropping_connections_mid_stream_cannot_crash_the_gateway(
    provider: str, tmp_path: pathlib.Path, fake_upstream: FakeUpstream
) -> None:
    # An upstream that streams for a while, so h2load's final drop finds calls in flight.
    fake_upstream.set_default(Reply(text="one two three four five six seven " * 6, chunks=40))
    config = (
        LOCAL if provider == "local" else OPENAI.replace("BASE", fake_upstream.base_url("openai"))
    )
    stream_frame = tmp_path / "stream.bin"
    stream_frame.write_bytes(
        grpc_frame(pb.StreamCompleteRequest(prompt="count to twenty please").SerializeToString())
    )
    unary_frame = tmp_path / "unary.bin"
    unary_frame.write_bytes(grpc_frame(pb.CompleteRequest(prompt="hello").SerializeToString()))

    async with gateway_process(config, tmp_path) as gateway:
        for round_ in range(4):
            report = await h2load(gateway, STREAM, stream_frame, seconds=1)
            assert gateway.alive, (
                f"died in stream round {round_}:\n{report}\n{gateway.output()[-2000:]}"
            )
            assert "succeeded" in report
        await h2load(gateway, UNARY, unary_frame, seconds=1)
        await asyncio.to_thread(vanish_mid_stream, gateway.address, 20)
        await still_answers(gateway)
        # Each dropped call is one access-log line (CANCELLED), not an error with a traceback.
        output = gateway.output()
        assert "CANCELLED" in output
        assert "Traceback" not in output, output[-3000:]
