"""The connection-level limits under `server:` (README "Limits"), each shown against a real
grpc.aio gateway: slow readers held by flow control and ended by a deadline or the connection's
age, idle and half-open connections closed, keepalive abuse answered with GOAWAY."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Callable

import grpc
import h2.errors
import h2.events
import h2.exceptions
import pytest

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import AccessLog, Gateway, StartGateway, make_settings
from tests.support.h2client import H2Client

STREAM = "/hapax.v1.CompletionService/StreamComplete"
# The local provider streams one message per word: 300,000 of them, far more than any flow
# control window, and more than the gateway could produce in the time these tests allow.
LONG_ANSWER = pb.StreamCompleteRequest(prompt="w " * 300_000).SerializeToString()


def active_streams(gateway: Gateway) -> float:
    registry = gateway.app.observability.metrics.registry
    value = registry.get_sample_value("hapax_grpc_active_requests", {"method": "StreamComplete"})
    return value or 0.0


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110  (a metric gauge has no event to wait on)
            await asyncio.sleep(0.01)


def connection_closed_by_server(client: H2Client, within: float) -> list[h2.events.Event]:
    """Read, acknowledging nothing, until the server ends the connection (or `within` passes)."""
    end = time.monotonic() + within
    seen: list[h2.events.Event] = []
    while not client.closed and time.monotonic() < end:
        try:
            seen.extend(client.read(until=0.2))
        except Exception:  # h2 refusing input after the server's GOAWAY: closed for our purpose
            client.closed = True
    return seen


async def test_a_client_that_never_reads_is_held_by_flow_control_then_ended_by_its_deadline(
    gateway: Gateway, access_log: AccessLog
) -> None:
    client = H2Client(gateway.address, window=1024)  # never sends WINDOW_UPDATE
    try:
        await asyncio.to_thread(lambda: client.start(STREAM, LONG_ANSWER, [("grpc-timeout", "2S")]))
        await until(lambda: active_streams(gateway) == 1)
        await asyncio.to_thread(client.read, 0.5)
        # Half a second after it began, the call is still in flight: the gateway is not racing
        # through the answer into a buffer, flow control holds the handler at its next message.
        assert active_streams(gateway) == 1
        assert not access_log.records
        ended = await asyncio.to_thread(client.read_until_closed, {1}, 10.0)
    finally:
        client.close()
    assert ("grpc-status", str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])) in ended[1]
    await access_log.wait_for(1)
    assert vars(access_log.records[0])["code"] == "DEADLINE_EXCEEDED"
    assert active_streams(gateway) == 0


async def test_a_client_that_never_reads_and_sets_no_deadline_is_ended_by_the_connection_age(
    start_gateway: StartGateway, access_log: AccessLog
) -> None:
    gateway = await start_gateway(
        make_settings(server={"max_connection_age": "1s", "max_connection_age_grace": "1s"})
    )
    client = H2Client(gateway.address, window=1024)
    try:
        await asyncio.to_thread(lambda: client.start(STREAM, LONG_ANSWER))
        events = await asyncio.to_thread(connection_closed_by_server, client, 15.0)
    finally:
        client.close()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events) or client.closed
    await access_log.wait_for(1)
    assert vars(access_log.records[0])["code"] in ("CANCELLED", "UNAVAILABLE")
    assert active_streams(gateway) == 0


async def test_connections_get_goaway_at_their_maximum_age_so_clients_rebalance(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        make_settings(server={"max_connection_age": "0.5s", "max_connection_age_grace": "0.5s"})
    )
    client = H2Client(gateway.address)
    try:
        events = await asyncio.to_thread(connection_closed_by_server, client, 10.0)
    finally:
        client.close()
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == 0  # NO_ERROR: a graceful "reconnect elsewhere"
    # A grpc channel reconnects by itself and carries on.
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="after the goaway"), timeout=10)
    assert reply.text


async def test_an_idle_connection_is_closed_after_max_connection_idle(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(make_settings(server={"max_connection_idle": "0.5s"}))
    client = H2Client(gateway.address)
    try:
        events = await asyncio.to_thread(connection_closed_by_server, client, 10.0)
    finally:
        client.close()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


async def test_a_client_pinging_too_often_gets_goaway_enhance_your_calm(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        make_settings(server={"keepalive": {"min_ping_interval": "10s", "max_ping_strikes": 2}})
    )
    client = H2Client(gateway.address)

    def ping_flood() -> list[h2.events.Event]:
        seen: list[h2.events.Event] = []
        for i in range(20):
            try:
                client.conn.ping(i.to_bytes(8, "big"))
            except h2.exceptions.ProtocolError:
                break  # the server's GOAWAY arrived: h2 sends nothing more on this connection
            client.flush()
            seen.extend(client.read(until=0.1))
        return seen + connection_closed_by_server(client, 5.0)

    try:
        events = await asyncio.to_thread(ping_flood)
    finally:
        client.close()
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="others are fine"), timeout=10)
    assert reply.text


async def test_thousands_of_idle_connections_do_not_stop_others_and_are_dropped(
    start_gateway: StartGateway,
) -> None:
    """2,000 TCP connections that never send the HTTP/2 preface, and 200 that send it and then no
    call: the gateway answers others meanwhile, and closes both kinds (handshake timeout, idle)."""
    raw_n, h2_n = 2000, 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (raw_n + h2_n) + 200  # both ends live in this process
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    gateway = await start_gateway(
        make_settings(server={"handshake_timeout": "1s", "max_connection_idle": "1s"})
    )
    host, port = "127.0.0.1", gateway.app.port

    def open_all() -> tuple[list[socket.socket], list[H2Client]]:
        raw = [socket.create_connection((host, port)) for _ in range(raw_n)]
        speaking = [H2Client(gateway.address) for _ in range(h2_n)]
        return raw, speaking

    raw, speaking = await asyncio.to_thread(open_all)
    try:
        reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="anyone?"), timeout=10)
        assert reply.text

        def all_closed_by_server(within: float) -> tuple[int, int]:
            end = time.monotonic() + within
            closed_raw = sum(1 for sock in raw if _read_to_eof(sock, end))
            closed_h2 = 0
            for client in speaking:
                connection_closed_by_server(client, max(0.01, end - time.monotonic()))
                closed_h2 += client.closed
            return closed_raw, closed_h2

        closed_raw, closed_h2 = await asyncio.to_thread(all_closed_by_server, 20.0)
        assert closed_raw == raw_n
        assert closed_h2 == h2_n
    finally:
        for sock in raw:
            sock.close()
        for client in speaking:
            client.close()


def _read_to_eof(sock: socket.socket, end: float) -> bool:
    """True once the server closed `sock` (EOF or reset) before `end`; what it sent is dropped."""
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


async def test_a_peer_that_stops_answering_pings_is_dropped_by_keepalive(
    start_gateway: StartGateway,
) -> None:
    """A caller whose host vanished (no FIN, no RST) is found by the server's own pings."""
    gateway = await start_gateway(
        make_settings(
            server={
                "max_connection_idle": None,
                "max_connection_age": None,
                "keepalive": {"time": "0.5s", "timeout": "0.5s"},
            }
        )
    )
    client = H2Client(gateway.address)
    try:
        await asyncio.to_thread(client.read, 0.3)  # settings exchanged; from here on, silence
        await asyncio.sleep(3)  # no read: the server's PINGs go unanswered
        events = await asyncio.to_thread(connection_closed_by_server, client, 10.0)
    finally:
        client.close()
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].additional_data == b"ping_timeout"
