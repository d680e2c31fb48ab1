"""What a call is charged against its key's tokens-per-minute limit, however it ends, on both
stores (this process's and Redis) and through both doors (gRPC and the OpenAI-compatible HTTP
door): a stream the caller leaves, or the upstream breaks, after some chunks keeps its estimate
and is charged what it delivered; only a call that delivered nothing is refunded; and a usage
correction owed by an earlier call counts even when the next admission is refused at the
streams cap (Redis used to drop it)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import openai
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.admission import redis_store
from hapaxd.admission.limits import CHARS_PER_TOKEN, TOKENS_PER_MESSAGE, Ask, StoreUnavailable
from hapaxd.admission.redis_store import RedisStore
from hapaxd.config import RateLimitSettings
from tests.admission.conftest import SEARCH_KEY, bearer, settled
from tests.admission.test_rate_limits import limited
from tests.conftest import Gateway, StartGateway
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.support.redis import RedisServer
from tests.support.status_details import details_of

# An 88-token prompt by the admission estimate: 340 characters at four a token, plus one message.
PROMPT = "x" * ((88 - TOKENS_PER_MESSAGE) * CHARS_PER_TOKEN)
TEXT = " ".join(f"w{i:02d}" for i in range(20))  # 20 chunks of a stream, one word each


class Refused(Exception):
    """A call refused by a rate limit: which limit, and the wait the gateway gave."""

    def __init__(self, limit: str, wait: float) -> None:
        super().__init__(limit, wait)
        self.limit, self.wait = limit, wait


@dataclass
class Door:
    """One way in to a started gateway, with the `search` key."""

    name: str
    gateway: Gateway

    def sdk(self) -> openai.AsyncOpenAI:
        assert self.gateway.app.openai_http is not None
        return openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{self.gateway.app.openai_http.port}/v1",
            api_key=SEARCH_KEY,
            max_retries=0,
        )

    async def complete(self, prompt: str) -> None:
        """A unary call; Refused when a limit refused it."""
        if self.name == "grpc":
            try:
                await self.gateway.stub.Complete(
                    pb.CompleteRequest(prompt=prompt), metadata=bearer(SEARCH_KEY)
                )
            except grpc.aio.AioRpcError as error:
                raise _refused_grpc(error) from None
            return
        async with self.sdk() as sdk:
            try:
                await sdk.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": prompt}]
                )
            except openai.RateLimitError as error:
                raise _refused_http(error) from None

    @contextlib.asynccontextmanager
    async def stream(self, prompt: str) -> AsyncIterator[AsyncIterator[str]]:
        """A stream's text pieces as they come; leaving the block leaves the stream. Refused
        when a limit refused it; an error after chunks ends the iteration with StreamBroke."""
        if self.name == "grpc":
            call = self.gateway.stub.StreamComplete(
                pb.StreamCompleteRequest(prompt=prompt), metadata=bearer(SEARCH_KEY)
            )

            async def pieces() -> AsyncIterator[str]:
                try:
                    async for message in call:
                        if message.delta:
                            yield message.delta
                except grpc.aio.AioRpcError as error:
                    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise _refused_grpc(error) from None
                    raise StreamBroke(error.details() or "") from None

            try:
                yield pieces()
            finally:
                call.cancel()
            return
        async with self.sdk() as sdk:
            try:
                stream = await sdk.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": prompt}], stream=True
                )
            except openai.RateLimitError as error:
                raise _refused_http(error) from None

            async def texts() -> AsyncIterator[str]:
                try:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            yield chunk.choices[0].delta.content
                except openai.APIError as error:
                    raise StreamBroke(error.message) from None

            try:
                yield texts()
            finally:
                await stream.close()


class StreamBroke(Exception):
    """A stream that ended with an error after it had begun."""


def _refused_grpc(error: grpc.aio.AioRpcError) -> BaseException:
    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return error
    got = details_of(error)
    assert got.info is not None and got.retry is not None
    wait = got.retry.retry_delay.seconds + got.retry.retry_delay.nanos / 1e9
    return Refused(got.info.metadata["limit"], wait)


def _refused_http(error: openai.RateLimitError) -> Refused:
    message = error.message
    limit = next(
        name
        for name in ("requests_per_minute", "tokens_per_minute", "concurrent_streams")
        if name.replace("_", " ") in message
    )
    return Refused(limit, float(error.response.headers["retry-after"]))


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The rate_limit settings of each store; Redis a real redis-server on loopback."""
    if request.param == "local":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"backend": "redis", "redis_url": server.url}


@pytest.fixture(params=["grpc", "http"])
def door_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def start(
    start_gateway: StartGateway, fake: FakeUpstream, store: dict[str, Any], name: str, **limits: Any
) -> Door:
    door = {"enabled": True, "address": "127.0.0.1:0"}
    config = {"rate_limit": store, "openai_http": door}
    return Door(name, await start_gateway(limited(fake, config=config, **limits)))


def charged_wait(delivered: list[str]) -> float:
    """The least wait for another PROMPT after a stream that delivered `delivered` and kept its
    estimate: 88 + the delivered tokens taken from 100, then 88 needed, at 100/60 a second
    (less two tokens of refill for the time the test itself takes)."""
    tokens = math.ceil(sum(len(t) for t in delivered) / CHARS_PER_TOKEN)
    return (88 + tokens - 12 - 2) * 60 / 100


@pytest.mark.parametrize("ending", ["caller leaves", "upstream breaks"])
async def test_a_stream_that_delivered_chunks_keeps_its_estimate_and_is_charged_them(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    store: dict[str, Any],
    door_name: str,
    ending: str,
) -> None:
    door = await start(start_gateway, fake_upstream, store, door_name, tokens_per_minute=100)
    if ending == "caller leaves":
        fake_upstream.set_default(Reply(text=TEXT, chunks=20, pause_after=10))
    else:
        fake_upstream.set_default(Reply(text=TEXT, chunks=20, drop_after=10))
    delivered: list[str] = []
    async with door.stream(PROMPT) as pieces:
        try:
            async for piece in pieces:
                delivered.append(piece)
                if len(delivered) == 10 and ending == "caller leaves":
                    break
        except StreamBroke as broke:
            assert ending == "upstream breaks", broke
    assert len(delivered) == 10
    if ending == "caller leaves":
        await fake_upstream.wait_for_disconnects(1)
    fake_upstream.release()
    await settled(door.gateway)
    fake_upstream.set_default(Reply(text=TEXT, chunks=20))

    with pytest.raises(Refused) as caught:  # the same prompt again: the bucket has no room
        async with door.stream(PROMPT) as pieces:
            [piece async for piece in pieces]
    assert caught.value.limit == "tokens_per_minute"
    assert caught.value.wait >= charged_wait(delivered), "the delivered chunks were charged too"
    with pytest.raises(Refused):  # as a unary call of the same size is
        await door.complete(PROMPT)
    assert fake_upstream.count("openai.chat") == 1


async def test_a_stream_that_delivered_nothing_is_refunded(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, store: dict[str, Any], door_name: str
) -> None:
    door = await start(start_gateway, fake_upstream, store, door_name, tokens_per_minute=100)
    fake_upstream.set_default(Fail(503))
    with pytest.raises((StreamBroke, grpc.aio.AioRpcError, openai.APIStatusError)):
        async with door.stream(PROMPT) as pieces:
            [piece async for piece in pieces]
    await settled(door.gateway)
    fake_upstream.set_default(Reply(text=TEXT, chunks=20))
    async with door.stream(PROMPT) as pieces:  # refunded: the same prompt fits again
        assert "".join([piece async for piece in pieces]).split() == TEXT.split()


async def test_a_correction_owed_counts_when_the_next_stream_is_refused_at_its_cap(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    store: dict[str, Any],
    door_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis: what a key owes rides with its next admission; never flushed alone during this test.
    monkeypatch.setattr(redis_store, "FLUSH_AFTER", 60.0)
    door = await start(
        start_gateway,
        fake_upstream,
        store,
        door_name,
        tokens_per_minute=100,
        max_concurrent_streams=1,
    )
    fake_upstream.set_default(Reply(text="a b c", chunks=3, stall_after=1))
    async with door.stream("one") as first:  # 4 tokens by the estimate; held open
        assert await anext(first)
        # A unary call estimated at 33 tokens that reports 123: 90 more owed, the bucket in debt.
        fake_upstream.set_default(
            Reply(text="long", chunks=1, prompt_tokens=100, completion_tokens=23)
        )
        await door.complete("y" * 120)
        with pytest.raises(Refused) as at_cap:
            async with door.stream("two") as second:
                [piece async for piece in second]
        assert at_cap.value.limit == "concurrent_streams"
        with pytest.raises(Refused) as in_debt:  # a small call: 4 tokens, and none to spare
            await door.complete("hi")
        assert in_debt.value.limit == "tokens_per_minute"
        assert in_debt.value.wait >= (4 + 27 - 2) * 60 / 100, "the 90 tokens owed were charged"


async def test_redis_applies_a_correction_whatever_the_verdict_or_keeps_it_until_sent(
    redis_server: RedisServer,
) -> None:
    settings = RateLimitSettings(backend="redis", redis_url=redis_server.url)
    store = RedisStore(settings)
    client = redis_server.client()

    async def level() -> float:
        return float(await client.hget("hapax:rl:{team}:tpm", "level") or "nan")

    try:
        assert await store.take(Ask("team", tpm=100, tokens=10, streams=1, lease="a")) is None
        store.adjust("team", 100, 50)  # an earlier call reported 50 more than its estimate
        refused = await store.take(Ask("team", tpm=100, tokens=10, streams=1, lease="b"))
        assert refused is not None and refused[0] == "concurrent_streams"
        assert 39 <= await level() <= 41, "100 - 10 taken - 50 owed, refusal or not"

        store.adjust("team", 100, 30)
        await redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.take(Ask("team", tpm=100, tokens=1))
        await store.flush()  # still down: kept, not dropped
        await redis_server.start()
        await asyncio.sleep(redis_store.DOWN_FOR + 0.1)
        client = redis_server.client()
        await store.take(Ask("team", tpm=100, tokens=0))  # Redis came back empty: full, less 30
        assert 69 <= await level() <= 71, "the 30 owed across the outage were charged"
    finally:
        await store.aclose()
        await client.aclose()
