"""Budgets: a key's or a team's cap in money or tokens per UTC window, enforced when a call is
admitted. Concurrent calls cannot together pass one; a refused call gets RESOURCE_EXHAUSTED
BUDGET_EXCEEDED with the budget named and, for a windowed budget, when to retry; a restart does
not reset spend (the ledger seeds it); a reload that lowers a budget applies from the next
call; a window rolling over admits again. The gateway tests run on both stores: this process's
and a real redis-server's (tests/usage/test_redis_budgets.py has what only Redis does)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.admission.budgets import Budgets, LocalBudgets, window_of
from hapaxd.admission.keys import Caller
from hapaxd.config import BudgetsSettings
from hapaxd.core.errors import BudgetExceeded
from tests.admission.conftest import SEARCH_KEY, bearer, keys, settled
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Hang, Reply
from tests.support.processes import free_port
from tests.support.redis import RedisServer
from tests.support.status_details import details_of

PRICE = {"prompt": "1000", "completion": "1000"}  # USD per 1M tokens: 1,000,000 nanos a token
MAX_TOKENS = 96
PROMPT = "x" * 4  # 1 token of text + 3 per message: 4 tokens estimated
WORST = (4 + MAX_TOKENS) * 1_000_000  # nanos a call reserves: USD 0.1


@pytest.fixture(params=["local", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The budgets' store settings: this process's, or a real redis-server's."""
    if request.param == "local":
        yield {}
        return
    server = RedisServer(free_port(), tmp_path)
    await server.start()
    try:
        yield {"backend": "redis", "redis_url": server.url}
    finally:
        await server.stop()


async def amounts(gateway: Gateway) -> tuple[int, int]:
    """(spent, reserved) over the budgets' current windows, as their store has them once every
    settle has reached it."""
    budgets = gateway.app.generations.current.budgets
    await budgets.store.drain()
    found = await budgets.status()
    return sum(spent for _, _, spent, _ in found), sum(reserved for _, _, _, reserved in found)


def settings(
    fake: FakeUpstream,
    tmp_path: Path,
    budgets: list[dict[str, Any]],
    store: dict[str, Any] | None = None,
    **more: Any,
) -> Any:
    provider = {
        "name": "up",
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"*": "gpt-test"},
    }
    return make_settings(
        providers=[provider],
        auth={"keys": keys()},
        prices={"models": {"gpt-test": PRICE}},
        ledger={"path": str(tmp_path / "usage.db"), "flush_interval": "50ms"},
        budgets={"limits": budgets, **(store or {})},
        openai_http={"enabled": True, "address": "127.0.0.1:0"},
        router={"retry": {"max_attempts": 1}},
        **more,
    )


def daily(amount: Decimal, **more: Any) -> dict[str, Any]:
    return {"name": "search-daily", "key": "search", "money": str(amount), "window": "day", **more}


async def complete(gateway: Gateway, n: int = 0) -> pb.CompleteResponse:
    request = pb.CompleteRequest(prompt=f"{PROMPT}{n:03d}"[-4:], max_tokens=MAX_TOKENS)
    return await gateway.stub.Complete(request, metadata=bearer(SEARCH_KEY))


async def refused(gateway: Gateway, n: int = 0) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(gateway, n)
    return caught.value


async def test_fifty_concurrent_calls_against_a_budget_that_fits_ten_admit_ten(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    fake_upstream.set_default(Hang(seconds=0.5, then=Reply(prompt_tokens=4, completion_tokens=1)))
    budget = Decimal(WORST * 10) / 1_000_000_000  # USD 1: ten worst cases
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(budget)], store))
    results = await asyncio.gather(
        *(complete(gateway, n) for n in range(50)), return_exceptions=True
    )
    answered = [r for r in results if isinstance(r, pb.CompleteResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(answered) == 10 and len(failed) == 40
    error = failed[0]
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = details_of(error)
    assert details.info is not None and details.info.reason == "BUDGET_EXCEEDED"
    assert details.info.metadata["budget"] == "search-daily"
    assert details.quota is not None
    assert [v.subject for v in details.quota.violations] == ["budget:search-daily"]
    assert details.retry is not None  # until the day (UTC) ends
    assert 0 < details.retry.retry_delay.seconds <= 86_400
    assert "search-daily" in (error.details() or "")


async def test_the_real_cost_replaces_the_reservation_and_a_failed_call_costs_nothing(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    """Room for 2 worst cases: calls that really cost a tenth of one keep being admitted; a call
    no provider answered leaves nothing reserved."""
    from tests.fakes.upstream import Fail

    budget = Decimal(WORST * 2) / 1_000_000_000
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(budget)], store))
    fake_upstream.set_default(Fail(500))
    for n in range(3):  # more than fit at once: each was refunded when it failed
        assert (await refused(gateway, n)).code() is grpc.StatusCode.UNAVAILABLE
    assert await amounts(gateway) == (0, 0)
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=6))  # 10 tokens: 0.01 USD
    for n in range(11):  # admitted while spent <= 0.1 (0.1 free of 0.2): 11 x 0.01 spent
        await complete(gateway, n)
        await gateway.app.generations.current.budgets.store.drain()
    assert await amounts(gateway) == (11 * 10 * 1_000_000, 0)
    assert (await refused(gateway, 99)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # 0.09 free


async def test_a_token_budget_in_total_has_no_retry(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=50))
    budget = {"name": "team-total", "team": "search-team", "tokens": 150, "window": "total"}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [budget], store))
    await complete(gateway)  # reserves 100, spends 54
    error = await refused(gateway)  # 54 + 100 > 150
    details = details_of(error)
    assert details.info is not None and details.info.reason == "BUDGET_EXCEEDED"
    assert details.retry is None


async def test_the_http_door_answers_429_in_openais_body(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    gateway = await start_gateway(
        settings(fake_upstream, tmp_path, [daily(Decimal("0.01"))], store)
    )
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 96}
    headers = {"authorization": f"Bearer {SEARCH_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers=headers) as answer,
    ):
        assert answer.status == 429
        error = (await answer.json())["error"]
        assert error["code"] == "BUDGET_EXCEEDED" or "search-daily" in error["message"]
        assert "retry-after" in answer.headers


async def test_a_restart_does_not_reset_spend(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=96))  # a worst case each
    budget = Decimal(WORST * 3) / 1_000_000_000
    first = await start_gateway(settings(fake_upstream, tmp_path, [daily(budget)], store))
    for n in range(3):
        await complete(first, n)
    assert (await refused(first)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await first.app.stop(grace=1)  # the ledger writes its rows
    second = await start_gateway(settings(fake_upstream, tmp_path, [daily(budget)], store))
    assert (await refused(second)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_reload_that_lowers_a_budget_applies_from_the_next_call(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=96))
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(Decimal("1"))], store))
    for n in range(3):
        await complete(gateway, n)  # USD 0.3 spent
    lower = settings(fake_upstream, tmp_path, [daily(Decimal("0.35"))], store)
    assert await gateway.app.reload_from(lambda: lower, "test")
    assert (await refused(gateway)).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    higher = settings(fake_upstream, tmp_path, [daily(Decimal("0.5"))], store)
    assert await gateway.app.reload_from(lambda: higher, "test")
    await complete(gateway, 7)


def test_budgets_must_name_a_key_or_team_the_config_has() -> None:
    from hapaxd import config

    with pytest.raises(config.ConfigError) as caught:
        make_settings(
            auth={"keys": keys()},
            budgets={"limits": [{"name": "b", "key": "nobody", "tokens": 5}]},
        )
    assert "budgets.limits[0].key" in str(caught.value)
    with pytest.raises(config.ConfigError, match="exactly one of money and tokens"):
        make_settings(
            auth={"keys": keys()},
            budgets={"limits": [{"name": "b", "key": "search", "tokens": 5, "money": 1}]},
        )


# the windows, on a clock the test moves ----------------------------------------------------------


def test_windows_are_utc_calendar_day_week_and_month() -> None:
    at = datetime.datetime(2026, 12, 31, 23, 59, tzinfo=datetime.UTC).timestamp()
    assert window_of("day", at) == ("2026-12-31", at + 60)
    monday = datetime.datetime(2027, 1, 4, tzinfo=datetime.UTC).timestamp()
    assert window_of("week", at) == ("2026-12-28", monday)  # a Thursday; weeks from Monday
    assert window_of("month", at) == ("2026-12-01", at + 60)
    assert window_of("total", at) == ("", None)


def test_a_window_rolling_over_admits_again() -> None:
    now = [datetime.datetime(2026, 12, 6, 23, 59, 30, tzinfo=datetime.UTC).timestamp()]
    settings = BudgetsSettings(
        limits=[{"name": "d", "key": "search", "tokens": 100, "window": "day"}]
    )
    budgets = Budgets(settings, LocalBudgets(), "USD", lambda: now[0])
    caller = Caller("search")

    async def run() -> None:
        (await budgets.reserve(caller, 10, 80, lambda p, c: None)).settle(None, 90)
        with pytest.raises(BudgetExceeded) as caught:
            await budgets.reserve(caller, 10, 80, lambda p, c: None)
        assert caught.value.retry_after == pytest.approx(30)
        now[0] += 31  # the next day (UTC)
        (await budgets.reserve(caller, 10, 80, lambda p, c: None)).settle(None, 90)

    asyncio.run(run())


async def test_usage_shows_where_each_budget_stands(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    from hapax.v1 import usage_service_pb2 as usage_pb
    from hapax.v1 import usage_service_pb2_grpc as usage_grpc
    from tests.admission.conftest import NARROW_KEY, OPS_KEY

    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=6))  # USD 0.01 a call
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [daily(Decimal("1"))], store))
    for n in range(3):
        await complete(gateway, n)
    stub = usage_grpc.UsageServiceStub(gateway.channel)
    mine = await stub.GetUsage(usage_pb.GetUsageRequest(), metadata=bearer(SEARCH_KEY))
    [status] = mine.budgets
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert (status.name, status.key_id, status.window, status.window_start) == (
        "search-daily",
        "search",
        "day",
        today,
    )
    assert (status.unit, status.limit, status.spent, status.reserved) == (
        "USD",
        1_000_000_000,
        30_000_000,
        0,
    )
    assert status.remaining == 970_000_000
    admin = await stub.GetUsage(usage_pb.GetUsageRequest(), metadata=bearer(OPS_KEY))
    assert [b.name for b in admin.budgets] == ["search-daily"]
    other = await stub.GetUsage(usage_pb.GetUsageRequest(), metadata=bearer(NARROW_KEY))
    assert list(other.budgets) == []


async def test_a_stream_cut_off_is_charged_what_it_delivered(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    store: dict[str, Any],
) -> None:
    """No usage comes from a broken stream: its prompt's estimate and the tokens it delivered
    are charged (never the whole reservation, never nothing)."""
    fake_upstream.set_default(Reply(text="abcd" * 10, chunks=10, drop_after=2))
    budget = {"name": "t", "key": "search", "tokens": 10_000, "window": "total"}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, [budget], store))
    request = pb.StreamCompleteRequest(prompt=PROMPT, max_tokens=MAX_TOKENS)
    got = []
    with pytest.raises(grpc.aio.AioRpcError):
        async for message in gateway.stub.StreamComplete(request, metadata=bearer(SEARCH_KEY)):
            got.append(message.delta)
    delivered = len("".join(got))
    assert delivered > 0
    await settled(gateway)
    assert await amounts(gateway) == (4 + -(-delivered // 4), 0)  # prompt estimate + delivered
