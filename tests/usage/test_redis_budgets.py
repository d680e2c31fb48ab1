"""Budgets in a Redis the replicas share (`budgets.backend: redis`), against a real
redis-server on loopback: two gateway processes together stay within a budget; a window Redis
lost is seeded again from the ledger; with Redis down, budgeted calls are refused (closed, the
default) or admitted and charged once Redis is back (open); a hold whose replica died lapses
into spent and its late settle corrects it."""

from __future__ import annotations

import asyncio
import pathlib
import signal
from decimal import Decimal

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from hapaxd.admission.budgets import Budget
from hapaxd.admission.redis_budgets import RedisBudgets
from hapaxd.config import BudgetsSettings
from tests.admission.conftest import SEARCH_KEY, bearer, keys
from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream, Hang, Reply
from tests.support.processes import GatewayProcess, gateway_process
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.status_details import details_of
from tests.usage.test_budgets import WORST, amounts, complete, daily, refused, settings

# Keeps Redis busy (it runs one script at a time) for ARGV[1] seconds.
BUSY = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
repeat t = redis.call('TIME') until tonumber(t[1]) + tonumber(t[2]) / 1000000 >= until_
return 1
"""

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
prices: {{models: {{gpt-test: {{prompt: 1000, completion: 1000}}}}}}
ledger: {{path: "{path}", flush_interval: 100ms}}
budgets:
  backend: redis
  redis_url: "{redis_url}"
  limits:
    - {{name: search-daily, key: search, money: {money}, window: day}}
"""


async def fire(gateway: GatewayProcess, count: int) -> list[bool]:
    """`count` budgeted calls at once; whether each was answered (False: BUDGET_EXCEEDED)."""
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)

        async def one(i: int) -> bool:
            request = pb.CompleteRequest(prompt=f"call{i:03d}"[-4:], max_tokens=96)
            try:
                await stub.Complete(request, metadata=bearer(SEARCH_KEY))
            except grpc.aio.AioRpcError as error:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
                info = details_of(error).info
                assert info is not None and info.reason == "BUDGET_EXCEEDED"
                return False
            return True

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_gateway_processes_sharing_a_budget_together_stay_within_it(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """Room for ten worst cases; thirty calls at once, fifteen to each replica, each held long
    enough that all are in flight together: ten are admitted between them (each replica alone
    would have admitted ten)."""
    fake_upstream.set_default(Hang(seconds=1.0, then=Reply(prompt_tokens=4, completion_tokens=1)))
    money = Decimal(WORST * 10) / 1_000_000_000
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
                money=money,
            )
        )
    async with (
        gateway_process(configs[0], dirs[0]) as first,
        gateway_process(configs[1], dirs[1]) as second,
    ):
        answered = await asyncio.gather(fire(first, 15), fire(second, 15))
        assert sum(answered[0]) + sum(answered[1]) == 10
        assert sum(answered[0]) > 0 and sum(answered[1]) > 0  # both took part
        for gateway in (first, second):
            gateway.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0, gateway.output()[-2000:]
    client = redis_server.client()
    try:
        [key] = [k for k in await client.keys("hapax:budget:*") if not k.endswith(":holds")]
        spent, reserved = await client.hmget(key, ["spent", "reserved"])
    finally:
        await client.aclose()
    assert (int(spent), int(reserved)) == (10 * 5 * 1_000_000, 0)  # ten calls of 5 tokens


async def test_a_window_redis_lost_is_seeded_again_from_the_ledger(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=96))  # a worst case each
    budget = Decimal(WORST * 3) / 1_000_000_000
    store = {"backend": "redis", "redis_url": redis_server.url}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(budget)], store))
    for n in range(3):
        await complete(gateway, n)
    assert (await refused(gateway)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await gateway.app.generations.current.budgets.store.drain()
    assert gateway.app.ledger is not None
    await gateway.app.ledger.flush()  # the rows are in the ledger
    client = redis_server.client()
    try:
        await client.flushall()
    finally:
        await client.aclose()
    assert (await refused(gateway)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await amounts(gateway) == (3 * WORST, 0)


async def test_redis_down_refuses_budgeted_calls_by_default(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=6))
    store = {"backend": "redis", "redis_url": redis_server.url}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(Decimal(1))], store))
    await complete(gateway)
    await redis_server.stop()
    error = await refused(gateway, 1)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    details = details_of(error)
    assert details.info is not None and details.info.reason == "BUDGETS_UNAVAILABLE"
    assert details.retry is not None
    assert "redis" in (error.details() or "") and "Traceback" not in (error.details() or "")
    metrics = gateway.app.observability.metrics.registry
    refusals = metrics.get_sample_value(
        "hapax_budget_store_errors_total", {"backend": "redis", "outcome": "refused"}
    )
    assert refusals == 1


async def test_fail_open_admits_unchecked_and_charges_the_call_once_redis_answers(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=6))  # USD 0.01 a call
    store = {"backend": "redis", "redis_url": redis_server.url, "on_store_error": "open"}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(Decimal(1))], store))
    await complete(gateway)
    await gateway.app.generations.current.budgets.store.drain()
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # unreachable, its data kept
    try:
        await complete(gateway, 1)  # admitted unchecked; its settle waits for Redis
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    metrics = gateway.app.observability.metrics.registry
    admitted = metrics.get_sample_value(
        "hapax_budget_store_errors_total", {"backend": "redis", "outcome": "admitted"}
    )
    assert admitted == 1
    assert await amounts(gateway) == (2 * 10 * 1_000_000, 0)  # both calls, once each


def budget(name: str = "b", tokens: int = 100) -> Budget:
    return Budget(name, "search", None, None, tokens, "total")


async def test_a_hold_whose_replica_died_lapses_into_spent_and_a_late_settle_corrects_it(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    settings = BudgetsSettings(backend="redis", redis_url=redis_server.url)
    store = RedisBudgets(settings, lease=0.2)
    b = budget()
    try:
        assert await store.reserve("dead", [(b, "", None, 60)]) is None
        assert await store.reserve("other", [(b, "", None, 60)]) == (0, 60)  # 60 + 60 > 100
        await asyncio.sleep(0.3)  # the dead replica's hold lapses
        assert await store.status([(b, "")]) == [(0, 60)]  # still reserved until next admission
        assert await store.reserve("other", [(b, "", None, 50)]) == (0, 60)  # lapsed: spent 60
        assert await store.status([(b, "")]) == [(60, 0)]
        store.settle("dead", [(b, "", 60, 20)])  # the call did end after all, using 20
        await store.drain()
        assert await store.status([(b, "")]) == [(20, 0)]
        assert await store.reserve("other", [(b, "", None, 80)]) is None  # 20 + 80 fits
    finally:
        await store.aclose()


async def test_a_windows_keys_expire_after_it_and_a_total_budgets_never(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    settings = BudgetsSettings(backend="redis", redis_url=redis_server.url, key_prefix="t:")
    store = RedisBudgets(settings)
    day = Budget("d", "search", None, None, 100, "day")
    total = budget("t")
    ends = 2_000_000_000.0
    client = redis_server.client()
    try:
        assert (
            await store.reserve("h", [(day, "2033-05-17", ends, 5), (total, "", None, 5)]) is None
        )
        assert await client.ttl("t:{budgets}:t:total") == -1  # never expires
        assert await client.expiretime("t:{budgets}:d:2033-05-17") == int(ends) + 7 * 86400
        assert await client.hget("t:{budgets}:d:2033-05-17", "reserved") == "5"
    finally:
        await client.aclose()
        await store.aclose()


def test_budgets_in_redis_need_its_url() -> None:
    with pytest.raises(config.ConfigError, match=r"budgets.redis_url: required for backend redis"):
        config.parse(
            {
                "providers": [{"name": "local", "type": "local", "models": {"*": "local"}}],
                "default_model": "default",
                "auth": {"keys": keys()},
                "budgets": {"backend": "redis"},
            },
            {},
        )


async def test_a_caller_gone_while_its_reservation_was_out_leaves_nothing_reserved(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """Redis busy (another client's script) while a call's reservation is on its way; the caller
    gives up (its deadline) before the answer; Redis then runs the reservation. What it
    reserved is let go."""
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=6))
    store = {"backend": "redis", "redis_url": redis_server.url, "redis_timeout": "3s"}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(Decimal(1))], store))
    await complete(gateway)  # the window exists in Redis: 0.01 spent
    other = redis_server.client()
    sleeping = asyncio.ensure_future(other.eval(BUSY, 0, "0.8"))
    await asyncio.sleep(0.1)
    request = pb.CompleteRequest(prompt="gone", max_tokens=96)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(request, metadata=bearer(SEARCH_KEY), timeout=0.3)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await sleeping
    await other.aclose()
    assert await amounts(gateway) == (10 * 1_000_000, 0)


async def test_a_settle_sent_twice_counts_once(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """A settle whose answer was lost is sent again: the second changes nothing (neither for a
    hold still there nor for one that lapsed)."""
    settings = BudgetsSettings(backend="redis", redis_url=redis_server.url)
    store = RedisBudgets(settings, lease=0.2)
    b = budget(tokens=1000)
    try:
        assert await store.reserve("one", [(b, "", None, 100)]) is None
        for _ in range(2):
            store.settle("one", [(b, "", 100, 10)])
            await store.drain()
        assert await store.status([(b, "")]) == [(10, 0)]
        assert await store.reserve("two", [(b, "", None, 100)]) is None
        await asyncio.sleep(0.3)
        assert await store.reserve("three", [(b, "", None, 900)]) == (0, 110)  # two lapsed
        for _ in range(2):
            store.settle("two", [(b, "", 100, 30)])
            await store.drain()
        assert await store.status([(b, "")]) == [(40, 0)]
    finally:
        await store.aclose()
