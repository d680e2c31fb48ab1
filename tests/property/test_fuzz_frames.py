"""Fuzz at the byte level: random request frames and random metadata on a raw channel (no
serializer) to every unary-request method the gateway serves. Every answer is OK or a client-error
code, never UNKNOWN or INTERNAL; the gateway process stays up and its memory flat.

The gateway runs in its own process, so a crash is the process ending and its memory is its own."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapax.v1 import completion_service_pb2 as pb
from tests.support.processes import GatewayProcess, gateway_process

CONFIG = """\
server: {address: "{address}", grace_period: 0.5s}
metrics: {enabled: false}
logging: {level: warning}
health_check: {enabled: false}
providers: [{name: local, type: local, models: {"*": local}}]
default_model: default
auth: {enabled: false}
"""
METHODS = [
    ("/hapax.v1.CompletionService/Complete", False),
    ("/hapax.v1.CompletionService/StreamComplete", True),
    ("/hapax.v1.AdminService/ListProviders", False),
    ("/grpc.health.v1.Health/Check", False),
]
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}
VALID = pb.CompleteRequest(prompt="fuzz").SerializeToString()


class Running:
    def __init__(self, gateway: GatewayProcess, loop: asyncio.AbstractEventLoop) -> None:
        self.gateway = gateway
        self.loop = loop
        self.channel = grpc.insecure_channel(gateway.address)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    directory: pathlib.Path = tmp_path_factory.mktemp("fuzz")
    manager = gateway_process(CONFIG, directory)
    gateway = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(60)
    running = Running(gateway, loop)
    yield running
    running.channel.close()
    asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def call(
    running: Running, path: str, streaming: bool, payload: bytes, metadata: list
) -> grpc.StatusCode:
    try:
        if streaming:
            for _ in running.channel.unary_stream(path)(payload, metadata=metadata, timeout=10):
                pass
        else:
            running.channel.unary_unary(path)(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


# Metadata a grpc client library lets a caller send: lowercase keys, not reserved by gRPC;
# `-bin` keys carry bytes, the others printable ASCII.
keys = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,30}\Z").filter(
    lambda k: not k.startswith("grpc-") and k not in ("te", "content-type", "user-agent")
)
metadata = st.lists(
    st.one_of(
        st.tuples(keys.map(lambda k: k + "-bin"), st.binary(max_size=200)),
        st.tuples(
            keys,
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
        ),
        st.tuples(
            st.sampled_from(["x-request-id", "authorization", "x-api-key"]),
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
        ),
    ),
    max_size=8,
)
frames = st.one_of(
    st.binary(max_size=600),
    # A valid request with bytes flipped, cut or appended: near misses reach deeper parsing.
    st.tuples(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8)).map(
        lambda cut: VALID[: cut[0]] + cut[1] + VALID[cut[0] :]
    ),
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(METHODS), payload=frames, extra=metadata)
def test_random_frames_and_metadata_get_ok_or_a_client_error(
    running: Running, method: tuple[str, bool], payload: bytes, extra: list
) -> None:
    code = call(running, method[0], method[1], payload, extra)
    assert code in CLIENT_ERRORS, (code, method[0], payload, extra)
    assert running.gateway.alive


def test_after_the_fuzzing_the_gateway_is_up_and_its_memory_flat(running: Running) -> None:
    """Runs after the fuzz test above (file order): 2,000 more random frames may not grow the
    gateway's memory by more than a few MB once it is warm."""
    import random

    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randrange(0, 300)) for _ in range(2000)]
    for payload in payloads[:300]:  # warm: caches, allocator arenas
        call(running, METHODS[0][0], False, payload, [])
    before = running.gateway.rss_bytes()
    for i, payload in enumerate(payloads):
        path, streaming = METHODS[i % len(METHODS)]
        assert call(running, path, streaming, payload, []) in CLIENT_ERRORS
    grown = running.gateway.rss_bytes() - before
    assert running.gateway.alive
    assert grown < 8 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB over 2,000 bad frames"
    assert call(running, METHODS[0][0], False, VALID, []) is grpc.StatusCode.OK
