"""The response cache in a Redis the replicas share, against a real redis-server on loopback:
a miss on one gateway process is a hit on the other; a store that fails (Redis down, an entry
that does not decode) makes a miss, counted and never an error to the caller; a replica's near
copies answer its repeated hits without Redis, for `near_ttl` seconds and never past the
entry's time to live."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time

import grpc

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from tests.admission.conftest import SEARCH_KEY, bearer
from tests.cache.test_response_cache import CHAT, complete, settings
from tests.cache.test_response_cache import ask as request
from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support.processes import gateway_process
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)

CONFIG = """\
server: {{address: "{{address}}", grace_period: 5s}}
metrics: {{enabled: false}}
providers:
  - {{name: up, type: openai, base_url: "{base_url}", models: {{"*": gpt-test}}}}
default_model: default
router: {{retry: {{max_attempts: 1}}}}
auth:
  keys:
    - {{id: search, owner: search-team, sha256: "{digest}"}}
ledger: {{path: "{path}"}}
cache:
  backend: redis
  redis_url: "{redis_url}"
  models: {{"*": {{}}}}
"""


async def ask(address: str) -> tuple[pb.CompleteResponse, dict[str, str]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        call = stub.Complete(
            pb.CompleteRequest(prompt="two and two?", temperature=0), metadata=bearer(SEARCH_KEY)
        )
        answer = await call
        return answer, dict(await call.trailing_metadata())


async def test_a_miss_on_one_gateway_process_is_a_hit_on_the_other(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Reply(text="four"))
    dirs = [tmp_path / "a", tmp_path / "b"]
    configs = []
    for d in dirs:
        d.mkdir()
        configs.append(
            CONFIG.format(
                base_url=fake_upstream.base_url("openai"),
                digest=config.digest(SEARCH_KEY),
                path=d / "usage.db",
                redis_url=redis_server.url,
            )
        )
    async with (
        gateway_process(configs[0], dirs[0]) as first,
        gateway_process(configs[1], dirs[1]) as second,
    ):
        answer, said = await ask(first.address)
        assert said["x-hapax-cache"] == "miss"
        client = redis_server.client()
        try:
            for _ in range(100):  # the entry is stored in the background
                if await client.keys("hapax:cache:*"):
                    break
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        again, said = await ask(second.address)
        assert said["x-hapax-cache"] == "hit"
        assert again.text == answer.text == "four" and again.route.cached
        for gateway in (first, second):
            gateway.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0, gateway.output()[-2000:]
    assert fake_upstream.count(CHAT) == 1


async def test_redis_down_or_a_damaged_entry_is_a_miss_never_an_error(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    cache = {"backend": "redis", "redis_url": redis_server.url, "models": {"*": {}}, "near_ttl": 0}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, cache))
    await complete(gateway)
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway)
    assert said["x-hapax-cache"] == "hit"
    client = redis_server.client()
    try:
        [key] = await client.keys("hapax:cache:*")
        await client.set(key, b"\x00 not an entry")
    finally:
        await client.aclose()
    answer, said = await complete(gateway)
    assert said["x-hapax-cache"] == "miss" and answer.text
    await gateway.app.generations.current.cache.state.drain()
    await redis_server.stop()
    for _ in range(3):
        answer, said = await complete(gateway)
        assert said["x-hapax-cache"] == "miss" and answer.text
    await gateway.app.generations.current.cache.state.drain()
    metrics = gateway.app.observability.metrics.registry
    errors = {
        op: metrics.get_sample_value(
            "hapax_cache_errors_total", {"backend": "redis", "operation": op}
        )
        for op in ("get", "put", "decode")
    }
    assert errors["decode"] == 1 and errors["get"] == 3 and (errors["put"] or 0) >= 1
    assert fake_upstream.count(CHAT) == 5


async def test_near_copies_answer_repeated_hits_for_near_ttl_and_never_past_the_ttl(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    cache = {"backend": "redis", "redis_url": redis_server.url, "near_ttl": 2.0}
    cache["models"] = {"short": {"ttl": 0.4}, "*": {}}  # the first pattern that matches
    for name in ("w", "r"):
        (tmp_path / name).mkdir()
    writer = await start_gateway(settings(fake_upstream, tmp_path / "w", cache))
    reader = await start_gateway(settings(fake_upstream, tmp_path / "r", cache))
    await complete(writer)
    await complete(writer, request(model="short"))
    await writer.app.generations.current.cache.state.drain()
    for model in ("default", "short"):  # read from Redis, and kept near
        _, said = await complete(reader, request(model=model))
        assert said["x-hapax-cache"] == "hit"
    kept_at = time.monotonic()
    await redis_server.stop()
    for gateway in (writer, reader):  # Redis is gone: the near copies still answer
        _, said = await complete(gateway)
        assert said["x-hapax-cache"] == "hit"
    await asyncio.sleep(0.45)
    for gateway in (writer, reader):  # past the model's ttl: a miss, near copy or not
        _, said = await complete(gateway, request(model="short"))
        assert said["x-hapax-cache"] == "miss"
    await asyncio.sleep(kept_at + 2.1 - time.monotonic())
    _, said = await complete(reader)  # past near_ttl: Redis is asked, and is down
    assert said["x-hapax-cache"] == "miss"
    metrics = reader.app.observability.metrics.registry
    assert metrics.get_sample_value(
        "hapax_cache_errors_total", {"backend": "redis", "operation": "get"}
    )
    assert fake_upstream.count(CHAT) == 2 + 2 + 1
