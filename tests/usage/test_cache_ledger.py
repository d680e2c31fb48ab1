"""Response cache hits in the usage ledger, through a real gateway (the fake upstream, prices, the
response cache on) and a real ledger: SQLite, and PostgreSQL on a real server. A miss then a hit
of the same request: the hit's row has no tokens and cost 0, and says what it saved (the miss's
cost and tokens); GetUsage counts two calls, the tokens and cost once, one cache hit and what it
saved; `hapax usage` shows the hit and the saving."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hapax.cli import _parser, _run, usage_table
from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import usage_service_pb2 as usage_pb
from hapax.v1 import usage_service_pb2_grpc as usage_grpc
from tests.admission.conftest import OPS_KEY, SEARCH_KEY, bearer, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Reply
from tests.support import postgres

# The fixtures, by name (only the PostgreSQL case asks for them).
postgres_server = postgres.postgres_server
postgres_dsn = postgres.postgres_dsn

PROMPT, COMPLETION = 700, 100
PRICE = {"prompt": "1000", "completion": "2000"}  # USD per 1M tokens
MISS_COST = (PROMPT * 1000 + COMPLETION * 2000) * 1000  # nanos: USD 0.9
COLUMNS = (
    "request_id, cache, prompt_tokens, completion_tokens, cost_nanos, saved_cost_nanos, "
    "saved_tokens"
)


def settings(fake: FakeUpstream, ledger: dict[str, Any]) -> Any:
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
        ledger={**ledger, "flush_interval": "50ms"},
        cache={"models": {"*": {}}},
        router={"retry": {"max_attempts": 1}},
    )


async def ask(gateway: Gateway, request_id: str) -> tuple[pb.CompleteResponse, dict[str, str]]:
    metadata = (*bearer(SEARCH_KEY), ("x-request-id", request_id))
    call = gateway.stub.Complete(
        pb.CompleteRequest(prompt="what is two and two?", temperature=0.0), metadata=metadata
    )
    response = await call
    return response, dict(await call.trailing_metadata())


async def get_usage(gateway: Gateway, **fields: Any) -> usage_pb.GetUsageResponse:
    stub = usage_grpc.UsageServiceStub(gateway.channel)
    reply: usage_pb.GetUsageResponse = await stub.GetUsage(
        usage_pb.GetUsageRequest(**fields), metadata=bearer(OPS_KEY)
    )
    return reply


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The ledger's settings, and how to read its raw rows (a query's result)."""
    path = tmp_path / "usage.db"
    if request.param == "sqlite":

        def rows(query: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                found = db.execute(query).fetchall()
            db.close()
            return found

        return {"path": str(path)}, rows
    dsn = request.getfixturevalue("postgres_dsn")

    def pg_rows(query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn) as db:
            return db.execute(query).fetchall()

    return {"backend": "postgres", "postgres_url": dsn, "path": str(path)}, pg_rows


async def test_a_hit_is_rowed_at_cost_0_with_what_it_saved_and_counted_once(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    ledger: tuple[dict[str, Any], Any],
) -> None:
    ledger_settings, rows = ledger
    fake_upstream.set_default(
        Reply(text="four", prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    )
    gateway = await start_gateway(settings(fake_upstream, ledger_settings))
    miss, said = await ask(gateway, "the-miss")
    assert said["x-hapax-cache"] == "miss" and miss.usage.cost.nanos == MISS_COST
    await gateway.app.generations.current.cache.state.drain()
    hit, said = await ask(gateway, "the-hit")
    assert said["x-hapax-cache"] == "hit" and hit.route.cached
    # The caller is told the original tokens; the hit itself costs nothing.
    assert (hit.usage.prompt_tokens, hit.usage.completion_tokens) == (PROMPT, COMPLETION)
    assert hit.usage.cost.nanos == 0
    assert fake_upstream.count("openai.chat") == 1

    reply = await get_usage(gateway)  # flushes the ledger first
    [total] = reply.rows
    assert total.calls == 2 and total.errors == 0
    assert (total.prompt_tokens, total.completion_tokens) == (PROMPT, COMPLETION)  # once
    assert (total.cost.nanos, total.cost.currency) == (MISS_COST, "USD")  # once
    assert total.unpriced_calls == 0
    assert total.cache_hits == 1
    assert (total.saved_cost.nanos, total.saved_cost.currency) == (MISS_COST, "USD")
    assert total.saved_tokens == PROMPT + COMPLETION

    assert rows(f"SELECT {COLUMNS} FROM calls ORDER BY request_id") == [
        ("the-hit", "hit", 0, 0, 0, MISS_COST, PROMPT + COMPLETION),
        ("the-miss", "miss", PROMPT, COMPLETION, MISS_COST, None, 0),
    ]
    assert rows(
        "SELECT calls, cache_hits, cost_nanos, saved_cost_nanos, saved_tokens FROM rollups"
    )[0] == (2, 1, MISS_COST, MISS_COST, PROMPT + COMPLETION)

    # Grouped too: the hit is counted under its key and model, as the miss is.
    grouped = await get_usage(
        gateway, group_by=[usage_pb.USAGE_GROUP_KEY, usage_pb.USAGE_GROUP_MODEL]
    )
    [row] = grouped.rows
    assert (row.key_id, row.calls, row.cache_hits, row.saved_cost.nanos) == (
        "search",
        2,
        1,
        MISS_COST,
    )

    # `hapax usage` shows the hit and what it saved.
    out = io.StringIO()
    args = ["usage", "--by", "key,model", "--target", gateway.address, "--key", OPS_KEY]
    assert await asyncio.to_thread(_run, _parser().parse_args(args), out) == 0
    head, line = out.getvalue().splitlines()[:2]
    assert head.split() == [
        "key",
        "model",
        "calls",
        "errors",
        "prompt",
        "completion",
        "cost",
        "unpriced",
        "energy_wh",
        "cache_hits",
        "saved",
    ]
    assert line.split()[:3] == ["search", "default", "2"]
    assert line.split()[-3:] == ["1", "0.900000", "USD"]


def test_the_usage_table_has_cache_columns_only_when_the_cache_answered() -> None:
    def reply(hits: int) -> usage_pb.GetUsageResponse:
        row = usage_pb.UsageRow(model="m", calls=3, cache_hits=hits, saved_tokens=10 * hits)
        row.cost.CopyFrom(pb.Cost(currency="USD", nanos=2_000_000))
        row.saved_cost.CopyFrom(pb.Cost(currency="USD", nanos=1_000_000 * hits))
        return usage_pb.GetUsageResponse(rows=[row])

    plain = usage_table(reply(0), ["model"]).splitlines()
    assert plain[0].split()[-1] == "energy_wh" and "cache_hits" not in plain[0]
    cached = usage_table(reply(2), ["model"]).splitlines()
    assert cached[0].split()[-2:] == ["cache_hits", "saved"]
    assert cached[1].split()[-3:] == ["2", "0.002000", "USD"]
