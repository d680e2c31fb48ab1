"""Rate limits shared through a real redis-server on loopback: the store's script, two gateway
processes holding one key to one limit together, and what happens when Redis cannot be reached
(fail open: admitted, counted, logged; fail closed: UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from hapaxd.admission import redis_store
from hapaxd.admission.limits import REQUESTS, STREAMS, TOKENS, Ask
from hapaxd.admission.redis_store import FLUSH_AFTER, RedisStore
from tests.admission.conftest import SEARCH_KEY, bearer, keys
from tests.admission.test_auth import refused
from tests.observability.conftest import Observe, settings_with
from tests.support.processes import free_port, gateway_process
from tests.support.redis import RedisServer
from tests.support.status_details import details_of


def store_settings(url: str, **extra: Any) -> config.RateLimitSettings:
    return config.RateLimitSettings(backend="redis", redis_url=url, **extra)


async def test_the_script_admits_a_burst_then_refuses_and_takes_nothing_when_it_does(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(store_settings(redis_server.url))
    try:
        for _ in range(3):
            assert await store.take(Ask("team", 3, 1000, 10)) is None
        limit, wait = await store.take(Ask("team", 3, 1000, 10)) or ("", 0.0)
        assert limit == REQUESTS and 19.0 < wait <= 20.0
        assert await store.take(Ask("big", None, 100, 100)) is None
        assert await store.take(Ask("big", None, 100, 100)) is not None, "the first took all 100"
        assert (await store.take(Ask("big", None, 100, 1)) or ("",))[0] == TOKENS
        client = redis_server.client()
        level = float(await client.hget("hapax:rl:{team}:rpm", "level") or "nan")
        assert level < 0.1, "three of three taken; refusals took nothing"
        ttl = await client.ttl("hapax:rl:{team}:rpm")
        assert 55 <= ttl <= 62, "the hash expires once it would be full again"
        await client.aclose()
    finally:
        await store.aclose()


async def test_corrections_ride_with_the_next_admission_or_are_flushed_alone(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(store_settings(redis_server.url))
    client = redis_server.client()
    try:
        assert await store.take(Ask("team", None, 600, 100)) is None  # 500 left
        store.adjust("team", 600, 900)  # the answer cost 900 more: owed, not sent yet
        level = float(await client.hget("hapax:rl:{team}:tpm", "level") or "nan")
        assert 499 < level < 502
        limit, wait = await store.take(Ask("team", None, 600, 10)) or ("", 0.0)  # carries the 900
        assert limit == TOKENS and 40.0 < wait <= 41.0, "410 tokens short at 10 a second"
        level = float(await client.hget("hapax:rl:{team}:tpm", "level") or "nan")
        assert -401 < level < -398, "the correction was kept though the call was refused"
        store.adjust("team", 600, -600)  # a refund, owed with no call after it
        await asyncio.sleep(FLUSH_AFTER + 0.5)  # so it is sent on its own
        level = float(await client.hget("hapax:rl:{team}:tpm", "level") or "nan")
        assert 199 < level < 215
        assert await store.take(Ask("team", None, 600, 10)) is None
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_busy_key_costs_one_round_trip_per_admission(redis_server: RedisServer) -> None:
    store = RedisStore(store_settings(redis_server.url))
    client = redis_server.client()
    try:
        assert await store.take(Ask("warm", 100, 10_000, 5)) is None  # loads the script once
        await client.config_resetstat()
        for _ in range(20):
            assert await store.take(Ask("team", 100, 10_000, 5)) is None
            store.adjust("team", 10_000, 30)  # each call's correction rides with the next
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 20
        assert "cmdstat_eval" not in stats and "cmdstat_script|load" not in stats
    finally:
        await store.aclose()
        await client.aclose()


async def test_admissions_that_arrive_together_share_round_trips_and_keep_the_limit(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(store_settings(redis_server.url))
    client = redis_server.client()
    try:
        assert await store.take(Ask("warm", 100, 10_000, 5)) is None
        await client.config_resetstat()
        answers = await asyncio.gather(*(store.take(Ask("team", 30, None, 0)) for _ in range(50)))
        assert answers.count(None) == 30, "exactly the limit, however they were sent"
        assert {a[0] for a in answers if a is not None} == {REQUESTS}
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 50, "each admission judged once"
        # Fewer round trips than admissions: the second to the 50th waited for the first.
        reads = (await client.info("stats"))["total_reads_processed"]  # requests read: round trips
        assert reads < 10, f"{reads} round trips for 50 admissions"
    finally:
        await store.aclose()
        await client.aclose()


async def test_stream_slots_are_leases_shared_through_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "LEASE", 1.0)
    monkeypatch.setattr(redis_store, "RENEW_EVERY", 0.2)
    one = RedisStore(store_settings(redis_server.url))
    two = RedisStore(store_settings(redis_server.url))  # another replica
    client = redis_server.client()
    try:
        assert await one.take(Ask("team", streams=2, lease="l1")) is None
        assert await two.take(Ask("team", streams=2, lease="l2")) is None
        assert await one.take(Ask("team", streams=2, lease="l3")) == (STREAMS, 1.0)
        await asyncio.sleep(1.5)  # past the lease: still held, because renewed
        assert await client.zcard("hapax:rl:{team}:streams") == 2
        assert await two.take(Ask("team", streams=2, lease="l3")) == (STREAMS, 1.0)
        one.release("team", "l1")
        await asyncio.sleep(0.1)
        assert await two.take(Ask("team", streams=2, lease="l3")) is None
        # A replica that dies stops renewing: its slots free themselves within the lease.
        for task in two._loops.values():
            task.cancel()
        await asyncio.sleep(1.3)
        assert await one.take(Ask("team", streams=2, lease="l4")) is None
        assert await one.take(Ask("team", streams=2, lease="l5")) is None
        assert await client.zcard("hapax:rl:{team}:streams") == 2, "l2 and l3 were dropped"
    finally:
        await one.aclose()
        await two.aclose()
        await client.aclose()


GATEWAY = """\
server: {{address: "{{address}}", grace_period: 1s}}
metrics: {{enabled: false}}
logging: {{level: warning}}
providers:
  - {{name: local, type: local, models: {{"*": local}}}}
default_model: default
health_check: {{enabled: false}}
auth:
  keys:
    - {{id: shared, sha256: {digest}, requests_per_minute: {rpm}}}
rate_limit: {{backend: redis, redis_url: "{url}"}}
"""


@contextlib.asynccontextmanager
async def two_replicas(text: str, directory: pathlib.Path) -> AsyncIterator[list[Any]]:
    """Two `hapaxd serve` processes of one config, and a stub to each."""
    (directory / "a").mkdir()
    (directory / "b").mkdir()
    async with (
        gateway_process(text, directory / "a") as one,
        gateway_process(text, directory / "b") as two,
        grpc.aio.insecure_channel(one.address) as to_one,
        grpc.aio.insecure_channel(two.address) as to_two,
    ):
        yield [pb_grpc.CompletionServiceStub(c) for c in (to_one, to_two)]


async def test_two_gateway_processes_admit_together_what_one_limit_allows(
    redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    rpm = 40
    text = GATEWAY.format(digest=config.digest(SEARCH_KEY), rpm=rpm, url=redis_server.url)
    async with two_replicas(text, tmp_path) as stubs:
        began = time.monotonic()

        async def call(i: int) -> str:
            try:
                await stubs[i % 2].Complete(
                    pb.CompleteRequest(prompt=f"call {i}"), metadata=bearer(SEARCH_KEY), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return "OK"

        codes = await asyncio.gather(*(call(i) for i in range(150)))
        elapsed = time.monotonic() - began
    admitted = codes.count("OK")
    refills = rpm / 60 * elapsed  # what the bucket regained while the test ran
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    assert rpm <= admitted <= rpm + refills + 1, (admitted, elapsed)
    assert codes.count("RESOURCE_EXHAUSTED") == 150 - admitted


async def test_two_gateway_processes_share_one_keys_stream_cap(
    redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    text = GATEWAY.format(digest=config.digest(SEARCH_KEY), rpm=1000, url=redis_server.url)
    text = text.replace("requests_per_minute: 1000", "max_concurrent_streams: 2")
    slow = 'models: {"*": local}, options: {chunk_delay: 100ms}}'
    text = text.replace('models: {"*": local}}', slow)
    async with two_replicas(text, tmp_path) as stubs:
        long = pb.StreamCompleteRequest(prompt=" ".join(["word"] * 30))  # about 3 s of words
        held = [stubs[0].StreamComplete(long, metadata=bearer(SEARCH_KEY), timeout=20)]
        held.append(stubs[1].StreamComplete(long, metadata=bearer(SEARCH_KEY), timeout=20))
        for call in held:
            assert (await call.read()).delta
        for stub in stubs:
            error = await refused(
                stub.StreamComplete(long, metadata=bearer(SEARCH_KEY), timeout=20)
            )
            assert details_of(error).info.metadata["limit"] == "concurrent_streams"  # type: ignore[union-attr]
        held[0].cancel()
        async with asyncio.timeout(10):
            while True:  # the slot comes free once replica one has released its lease
                try:
                    third = stubs[1].StreamComplete(long, metadata=bearer(SEARCH_KEY), timeout=20)
                    assert (await third.read()).delta
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
        third.cancel()
        held[1].cancel()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_when_redis_cannot_be_reached_the_configured_mode_applies_and_is_counted(
    observe: Observe, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.WARNING, logger="hapaxd")
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here
    settings = settings_with(
        auth={"keys": keys(search={"requests_per_minute": 10})},
        rate_limit={"backend": "redis", "redis_url": nowhere, "on_store_error": mode},
    )
    observed = await observe(settings)
    for _ in range(3):
        call = observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
        if mode == "open":
            assert (await call).text
        else:
            got = details_of(await refused(call))
            assert got.code is grpc.StatusCode.UNAVAILABLE
            assert got.info is not None and got.info.reason == "RATE_LIMITER_UNAVAILABLE"
            assert got.retry is not None
    samples = await observed.samples()
    outcome = "admitted" if mode == "open" else "refused"
    assert samples.value("hapax_rate_limiter_errors_total", backend="redis", outcome=outcome) == 3
    warnings = [r.getMessage() for r in caplog.records if "rate limiter redis" in r.getMessage()]
    assert len(warnings) == 3
    assert ("admitted unchecked (fail open)" if mode == "open" else "refused (fail closed)") in (
        warnings[0]
    )
    assert "unreachable moments ago" in warnings[1], "not asked again at once: no wait per call"


async def test_admission_resumes_once_redis_is_back(
    redis_server: RedisServer, observe: Observe
) -> None:
    settings = settings_with(
        auth={"keys": keys(search={"requests_per_minute": 100})},
        rate_limit={"backend": "redis", "redis_url": redis_server.url, "on_store_error": "closed"},
    )
    observed = await observe(settings)
    stub = observed.stub
    assert (await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))).text
    await redis_server.stop()
    error = await refused(
        stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    await redis_server.start()
    await asyncio.sleep(1.1)  # the store is not asked for a second after a failure
    assert (await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))).text
