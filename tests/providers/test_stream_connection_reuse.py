"""Streams hand their upstream connection back to the pool, as unary calls do, even when the
upstream sends the end of its body apart from its last event (uvicorn-served vLLM and LiteLLM do);
a stream left before its end still closes the connection, so the upstream stops generating."""

from __future__ import annotations

import asyncio
import time

import pytest

from hapaxd.core.provider import Timeouts
from hapaxd.core.types import FinishReason, Usage
from tests.fakes.upstream import FakeUpstream, Raw, Reply
from tests.providers import test_adapters
from tests.providers.test_adapters import (
    OPENAI,
    REQUEST,
    TEXT,
    WITH_AZURE,
    Case,
    Factory,
    assert_well_formed,
    collect,
)

make = test_adapters.make  # the adapter factory fixture, shared with the scenario suite

STREAMS = 20
GAP = 0.005  # seconds between the last event and the end of the body: a uvicorn-sized gap


async def settle(fake: FakeUpstream, n: int) -> None:
    """Until the fake has ended its `n`th answer and the gateway has had a moment to read the end:
    the next request comes after that, as it does from callers over the network."""
    await fake.wait_for_ended(n)
    await asyncio.sleep(0.01)


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_streams_reuse_one_connection_when_the_body_ends_after_the_last_event(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text=TEXT, chunks=4, end_apart=GAP))
    provider = make(case)
    for n in range(1, STREAMS + 1):
        assert_well_formed(await collect(provider), TEXT, Usage(11, 4))
        await settle(fake_upstream, n)
    assert fake_upstream.count(case.chat) == STREAMS
    assert fake_upstream.connections == 1
    assert fake_upstream.disconnects == 0


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_streams_reuse_one_connection_when_the_body_ends_with_the_last_event(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(case)
    for n in range(1, STREAMS + 1):
        await collect(provider)
        await settle(fake_upstream, n)
    assert fake_upstream.connections == 1


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_unary_calls_reuse_one_connection(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(case)
    for n in range(1, STREAMS + 1):
        await provider.complete(REQUEST)
        await settle(fake_upstream, n)
    assert fake_upstream.connections == 1


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_a_stream_closed_before_its_end_closes_the_connection(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(case.chat, Reply(chunks=4, stall_after=2, end_apart=GAP))
    fake_upstream.set_default(Reply(end_apart=GAP))
    provider = make(case)
    stream = provider.stream(REQUEST)
    assert (await anext(stream)).delta
    await stream.aclose()
    await fake_upstream.wait_for_disconnects(1)  # the upstream was told to stop
    assert fake_upstream.requests[0].disconnected
    await collect(provider)
    assert fake_upstream.connections == 2


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_a_stream_cancelled_after_its_last_chunk_still_pools_the_connection(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    """The end is marked before the last chunk is handed on, so a consumer that stops there
    (closing the stream instead of reading it out) does not cost a connection."""
    fake_upstream.set_default(Reply(end_apart=GAP))
    provider = make(case)
    for n in range(1, 4):
        stream = provider.stream(REQUEST)
        async for chunk in stream:
            if chunk.finish_reason is not None:
                break
        await stream.aclose()
        await settle(fake_upstream, n)
    assert fake_upstream.connections == 1
    assert fake_upstream.disconnects == 0


async def test_the_last_chunk_does_not_wait_for_the_body_end(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(end_apart=3.0))
    provider = make(OPENAI)
    started = time.monotonic()
    chunks = await collect(provider)
    assert time.monotonic() - started < 1.0
    assert chunks[-1].finish_reason is FinishReason.STOP
    await provider.aclose()  # gives up the pending drain: the connection is closed at once
    await fake_upstream.wait_for_disconnects(1, within=0.5)


async def test_a_body_end_that_never_comes_is_waited_for_at_most_the_idle_timeout(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    idle = 0.2
    fake_upstream.set_default(Reply(end_apart=30.0))
    provider = make(OPENAI, Timeouts(connect=2.0, first_byte=5.0, idle=idle, total=60.0))
    await collect(provider)
    started = time.monotonic()
    await fake_upstream.wait_for_disconnects(1, within=2.0)
    assert idle / 2 < time.monotonic() - started < idle + 0.5
    fake_upstream.set_default(Reply())
    await collect(provider)
    assert fake_upstream.connections == 2


def _openai_stream_then(trailer: bytes) -> Raw:
    """A whole OpenAI stream up to `[DONE]`, then `trailer` and the body's end, each apart."""
    events = (
        b'data: {"object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    return Raw((events, trailer), piece_delay=0.02)


@pytest.mark.parametrize(
    ("trailer_bytes", "closed"),
    [(1024, False), (100 * 1024, True)],
    ids=["small-trailer-drained", "large-trailer-closed"],
)
async def test_what_follows_the_end_is_read_off_up_to_a_bound(
    trailer_bytes: int, closed: bool, make: Factory, fake_upstream: FakeUpstream
) -> None:
    """Bytes after the protocol's end (a trailing comment) are read off to reuse the connection,
    but not without bound: past 64 KiB the connection is closed instead."""
    fake_upstream.set_default(_openai_stream_then(b": " + b"x" * trailer_bytes + b"\n\n"))
    provider = make(OPENAI)
    assert (await collect(provider))[-1].finish_reason is FinishReason.STOP
    if closed:
        await fake_upstream.wait_for_disconnects(1)
    else:
        await settle(fake_upstream, 1)
    assert (await collect(provider))[-1].finish_reason is FinishReason.STOP
    assert fake_upstream.connections == (2 if closed else 1)
