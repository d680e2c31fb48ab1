"""A reload's generation is whole for admission too: a call settles its ticket on the store that
admitted it, a replaced store is closed only when its last call has left, and the store is
rebuilt only when its backend or connection changes, so a concurrent-streams cap holds across a
reload and bucket levels survive a change of `on_store_error` alone."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.admission.stores import same_store
from hapaxd.config import RateLimitSettings
from tests.admission.conftest import SEARCH_KEY, bearer, settled
from tests.admission.test_auth import refused
from tests.admission.test_rate_limits import limited
from tests.conftest import Gateway, StartGateway
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support.redis import RedisServer
from tests.support.status_details import details_of


def settings(fake: FakeUpstream, rate_limit: dict[str, Any], **limits: Any) -> Any:
    return limited(fake, config={"rate_limit": rate_limit}, **limits)


def open_stream(gateway: Gateway, prompt: str) -> Any:
    return gateway.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt=prompt), metadata=bearer(SEARCH_KEY)
    )


async def refused_limit(call: Any) -> str:
    got = details_of(await refused(call))
    assert got.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.info is not None
    return got.info.metadata["limit"]


def test_only_a_new_backend_or_connection_builds_a_new_store() -> None:
    local = RateLimitSettings()
    assert same_store(local, RateLimitSettings(on_store_error="closed"))
    assert same_store(local, RateLimitSettings(redis_timeout=2.0)), "not a local store's"
    redis = RateLimitSettings(backend="redis", redis_url="redis://127.0.0.1:1/0")
    assert not same_store(local, redis)
    assert same_store(redis, redis.model_copy(update={"on_store_error": "closed"}))
    assert not same_store(redis, redis.model_copy(update={"redis_timeout": 2.0}))
    assert not same_store(redis, redis.model_copy(update={"key_prefix": "other:"}))


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, RedisServer | None]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_server")
    return "local", None


async def test_a_streams_cap_holds_across_a_reload_of_the_rate_limit_settings(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    backend: tuple[str, RedisServer | None],
) -> None:
    kind, server = backend
    if server is not None:
        before: dict[str, Any] = {"backend": "redis", "redis_url": server.url}
        after = {**before, "redis_timeout": "2s", "on_store_error": "closed"}  # a new store
        client = server.client()
    else:
        before, after = {}, {"redis_timeout": "2s", "on_store_error": "closed"}  # the same one
    gateway = await start_gateway(settings(fake_upstream, before, max_concurrent_streams=1))
    app = gateway.app
    old_store = app.limiter.store
    fake_upstream.set_default(Reply(text="a b c", chunks=3, stall_after=1))
    first = open_stream(gateway, "one")
    assert (await first.read()).delta

    await app.reload(settings(fake_upstream, after, max_concurrent_streams=1))
    new_store = app.limiter.store
    assert (new_store is old_store) is (kind == "local")
    assert await refused_limit(open_stream(gateway, "two")) == "concurrent_streams", (
        "the open stream still holds the key's one slot"
    )
    if server is not None:
        assert await client.zcard("hapax:rl:{search}:streams") == 1, "its lease is kept"

    first.cancel()  # the first stream ends: released on the store that admitted it, once
    await settled(gateway)
    if server is not None:
        async with asyncio.timeout(5):
            while await client.zcard("hapax:rl:{search}:streams"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert old_store.streams_in_flight("search") == 0
    assert new_store.streams_in_flight("search") == 0, "nothing released into the new store"

    fake_upstream.set_default(Reply(text="a b c", chunks=3))
    messages = [m async for m in open_stream(gateway, "three")]
    assert messages[-1].finish_reason == pb.FINISH_REASON_STOP
    await settled(gateway)
    assert new_store.streams_in_flight("search") == 0
    if server is not None:
        assert await client.zcard("hapax:rl:{search}:streams") == 0
        await client.aclose()


async def test_a_change_of_on_store_error_alone_keeps_every_buckets_level(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(settings(fake_upstream, {}, requests_per_minute=2))
    call = gateway.stub.Complete
    for _ in range(2):
        await call(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    await gateway.app.reload(
        settings(fake_upstream, {"on_store_error": "closed"}, requests_per_minute=2)
    )
    assert gateway.app.limiter.fail_open is False, "the new mode applies"
    limit = await refused_limit(call(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)))
    assert limit == "requests_per_minute", "the bucket kept its level: not refilled"
