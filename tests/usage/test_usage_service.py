"""UsageService and `hapax usage`: totals from the ledger's rollups, each key seeing only its own
usage unless it is an admin key; bad ranges refused with BadRequest; a clear error when the
ledger is off."""

from __future__ import annotations

import asyncio
import datetime
import io
from pathlib import Path
from typing import Any

import grpc
import pytest

from hapax.cli import _parser, _run
from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import usage_service_pb2 as usage_pb
from hapax.v1 import usage_service_pb2_grpc as usage_grpc
from tests.admission.conftest import OPS_KEY, SEARCH_KEY, bearer, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support.status_details import details_of

PRICE = {"prompt": "1", "completion": "4"}  # USD per 1M tokens


def settings(fake: FakeUpstream, tmp_path: Path, **more: Any) -> Any:
    provider = {
        "name": "up",
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"*": "gpt-test"},
    }
    more.setdefault("ledger", {"path": str(tmp_path / "usage.db"), "flush_interval": "50ms"})
    return make_settings(
        providers=[provider], auth={"keys": keys()}, prices={"models": {"gpt-test": PRICE}}, **more
    )


async def calls(gateway: Gateway, key: str, count: int, model: str = "default") -> None:
    for _ in range(count):
        await gateway.stub.Complete(
            pb.CompleteRequest(prompt="hi", model=model), metadata=bearer(key)
        )


def usage_stub(gateway: Gateway) -> usage_grpc.UsageServiceStub:
    return usage_grpc.UsageServiceStub(gateway.channel)


@pytest.fixture
async def used(start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path) -> Gateway:
    """`search` made 3 calls to `default` and 1 to `other`; `ops` (admin) made 2."""
    fake_upstream.set_default(Reply(prompt_tokens=1000, completion_tokens=100))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    await calls(gateway, SEARCH_KEY, 3)
    await calls(gateway, SEARCH_KEY, 1, model="other")
    await calls(gateway, OPS_KEY, 2)
    return gateway


async def test_an_admin_key_sees_every_key_grouped(used: Gateway) -> None:
    request = usage_pb.GetUsageRequest(
        group_by=[usage_pb.USAGE_GROUP_KEY, usage_pb.USAGE_GROUP_MODEL]
    )
    reply = await usage_stub(used).GetUsage(request, metadata=bearer(OPS_KEY))
    got = {(r.key_id, r.model): r for r in reply.rows}
    assert set(got) == {("search", "default"), ("search", "other"), ("ops", "default")}
    search = got[("search", "default")]
    assert (search.calls, search.errors, search.prompt_tokens) == (3, 0, 3000)
    assert search.cost.currency == "USD"
    assert search.cost.nanos == 3 * (1000 * 1 + 100 * 4) * 1000  # USD 0.0042
    assert got[("ops", "default")].calls == 2 and not search.team == "x"
    assert not search.day  # not grouped by day


async def test_a_key_sees_only_its_own_usage_whatever_it_asks(used: Gateway) -> None:
    request = usage_pb.GetUsageRequest(key_id="ops", group_by=[usage_pb.USAGE_GROUP_KEY])
    reply = await usage_stub(used).GetUsage(request, metadata=bearer(SEARCH_KEY))
    assert [(r.key_id, r.calls) for r in reply.rows] == [("search", 4)]


async def test_grouped_by_team_and_day_and_filtered(used: Gateway) -> None:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    request = usage_pb.GetUsageRequest(
        start_day=today,
        end_day=today,
        model="default",
        group_by=[usage_pb.USAGE_GROUP_DAY, usage_pb.USAGE_GROUP_TEAM],
    )
    reply = await usage_stub(used).GetUsage(request, metadata=bearer(OPS_KEY))
    got = {(r.day, r.team): r.calls for r in reply.rows}
    assert got == {(today, "search-team"): 3, (today, "platform"): 2}
    yesterday = (datetime.date.fromisoformat(today) - datetime.timedelta(days=1)).isoformat()
    empty = await usage_stub(used).GetUsage(
        usage_pb.GetUsageRequest(start_day=yesterday, end_day=yesterday), metadata=bearer(OPS_KEY)
    )
    assert sum(r.calls for r in empty.rows) == 0


async def test_a_bad_range_is_refused_with_the_field(used: Gateway) -> None:
    for request, field in (
        (usage_pb.GetUsageRequest(start_day="yesterday"), "start_day"),
        (usage_pb.GetUsageRequest(start_day="2026-02-01", end_day="2026-01-01"), "start_day"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await usage_stub(used).GetUsage(request, metadata=bearer(OPS_KEY))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(caught.value).violated_fields == [field]


async def test_usage_needs_a_key(used: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage_stub(used).GetUsage(usage_pb.GetUsageRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_with_the_ledger_off_usage_says_so(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path, ledger={"enabled": False}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage_stub(gateway).GetUsage(usage_pb.GetUsageRequest(), metadata=bearer(OPS_KEY))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = details_of(caught.value).info
    assert info is not None and info.reason == "USAGE_LEDGER_OFF"


async def test_hapax_usage_prints_a_table(used: Gateway) -> None:
    args = _parser().parse_args(
        ["usage", "--target", used.address, "--key", OPS_KEY, "--by", "key,model"]
    )
    out = io.StringIO()
    assert await asyncio.to_thread(_run, args, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "key",
        "model",
        "calls",
        "errors",
        "prompt",
        "completion",
        "cost",
        "unpriced",
        "energy_wh",
    ]
    search = next(line.split() for line in lines if line.startswith("search") and "default" in line)
    assert search[:6] == ["search", "default", "3", "0", "3000", "300"]
    assert search[6:8] == ["0.004200", "USD"]


def test_hapax_usage_says_where_each_budget_stands() -> None:
    from hapax.cli import budget_lines

    reply = usage_pb.GetUsageResponse(
        budgets=[
            usage_pb.BudgetStatus(
                name="search-daily",
                key_id="search",
                window="day",
                window_start="2026-12-06",
                unit="USD",
                limit=50_000_000_000,
                spent=1_250_000_000,
                reserved=100_000_000,
                remaining=48_650_000_000,
            ),
            usage_pb.BudgetStatus(
                name="all", team="platform", window="total", unit="tokens", limit=1000, spent=10
            ),
        ]
    )
    lines = budget_lines(reply).strip().splitlines()
    assert lines == [
        "budget search-daily (key search) this day (from 2026-12-06): 1.250000 USD spent, "
        "0.100000 USD reserved, 48.650000 USD left of 50.000000 USD",
        "budget all (team platform) in total: 10 tokens spent, 0 tokens reserved, 0 tokens left "
        "of 1,000 tokens",
    ]
    assert budget_lines(usage_pb.GetUsageResponse()) == ""
