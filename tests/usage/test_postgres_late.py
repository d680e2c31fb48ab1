"""`hapaxd serve` with its usage ledger on a PostgreSQL server that is not running: the gateway
starts and serves all the same; each call's row waits in the spool (across a restart too) and
reaches the database once the server is up, exactly once; GetUsage answers UNAVAILABLE
USAGE_LEDGER_UNAVAILABLE meanwhile; and the budgets, which could not read their spend from the
ledger at start, read it once it answers, before this run's rows reach it: every call is
counted once in them, those of earlier runs (in the database, or in the spool a run left) and
this run's.

Real gateway processes and a real PostgreSQL server on loopback (tests/support/postgres.py),
started by the test when it chooses.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapax.v1 import usage_service_pb2 as usage_pb
from hapax.v1 import usage_service_pb2_grpc as usage_grpc
from hapaxd import config
from hapaxd.ledger.postgres_store import PostgresStore
from tests.admission.conftest import OPS_KEY, SEARCH_KEY, bearer
from tests.ledger.test_sqlite_store import make_row
from tests.support.postgres import PostgresMissing, PostgresServer
from tests.support.processes import GatewayProcess, gateway_process
from tests.support.status_details import details_of
from tests.usage.test_postgres_ledger import stop

CONFIG = """\
server: {{address: "{{address}}", grace_period: 5s}}
metrics: {{enabled: false}}
providers:
  - {{name: local, type: local, models: {{"*": local}}}}
default_model: default
auth:
  keys:
    - {{id: search, owner: search-team, sha256: "{search}"}}
    - {{id: ops, owner: platform, admin: true, sha256: "{ops}"}}
prices: {{models: {{local: {{prompt: 1000, completion: 1000}}}}}}
budgets:
  limits:
    - {{name: search-daily, key: search, money: 1000, window: day}}
ledger:
  backend: postgres
  postgres_url: {url}
  path: {path}
  flush_interval: 100ms
"""


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server with a port of its own, not started: the test starts it."""
    try:
        found = PostgresServer()
    except PostgresMissing as missing:
        pytest.fail(str(missing))
    try:
        yield found
    finally:
        found.remove()


def configured(server: PostgresServer, directory: pathlib.Path) -> str:
    return CONFIG.format(
        url=server.dsn(),
        path=directory / "usage.db",
        search=config.digest(SEARCH_KEY),
        ops=config.digest(OPS_KEY),
    )


async def complete(gateway: GatewayProcess, prefix: str, count: int) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        for i in range(count):
            metadata = (*bearer(SEARCH_KEY), ("x-request-id", f"{prefix}-{i:03d}"))
            await stub.Complete(pb.CompleteRequest(prompt=f"call {i}"), metadata=metadata)


async def get_usage(gateway: GatewayProcess) -> usage_pb.GetUsageResponse:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = usage_grpc.UsageServiceStub(channel)
        return await stub.GetUsage(usage_pb.GetUsageRequest(), metadata=bearer(OPS_KEY))


async def usage_refused(gateway: GatewayProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get_usage(gateway)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
    details = details_of(refused.value)
    assert details.info is not None and details.info.reason == "USAGE_LEDGER_UNAVAILABLE"
    assert "usage ledger" in (refused.value.details() or "")


def rows_in(dsn: str) -> tuple[int, int, int]:
    """(rows, distinct request ids, their cost in nanos) in the database now (no table yet:
    none)."""
    with psycopg.connect(dsn) as db:
        try:
            found: Any = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT request_id), COALESCE(SUM(cost_nanos), 0) "
                "FROM calls"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0, 0, 0
    return int(found[0]), int(found[1]), int(found[2])


async def until_rows(dsn: str, count: int, within: float = 60.0) -> tuple[int, int, int]:
    """The database's rows once it holds `count` (polled: the ledger retries every 2 s)."""
    deadline = time.monotonic() + within
    while True:
        found = await asyncio.to_thread(rows_in, dsn)
        if found[0] >= count:
            return found
        assert time.monotonic() < deadline, f"{found[0]} of {count} rows arrived"
        await asyncio.sleep(0.2)


async def settled(gateway: GatewayProcess, total: int, cost: int) -> usage_pb.GetUsageResponse:
    """GetUsage once the budgets were seeded from the ledger (the gateway logs it); its totals
    are `total` calls costing `cost`."""
    deadline = time.monotonic() + 30
    while "budgets: seeded from the usage ledger" not in gateway.output():
        assert time.monotonic() < deadline, "the budgets were never seeded"
        await asyncio.sleep(0.1)
    answer = await get_usage(gateway)
    [row] = answer.rows
    assert (row.calls, row.cost.nanos) == (total, cost)
    return answer


async def test_a_gateway_started_before_its_database_serves_and_writes_every_row_once(
    server: PostgresServer, tmp_path: pathlib.Path
) -> None:
    async with gateway_process(configured(server, tmp_path), tmp_path) as gateway:
        await complete(gateway, "late", 8)  # answered with no database at all
        await usage_refused(gateway)
        await asyncio.to_thread(server.start)  # initdb, then the server on the configured port
        count, distinct, cost = await until_rows(server.dsn(), 8)
        assert (count, distinct) == (8, 8) and cost > 0
        answer = await settled(gateway, 8, cost)
        [budget] = answer.budgets
        assert budget.spent == cost  # each call once: settled here, not again from the ledger
        await stop(gateway)
    assert rows_in(server.dsn()) == (8, 8, cost)
    assert "budgets: the usage ledger cannot be asked now" in gateway.output()


async def test_budgets_count_each_call_once_the_database_answers_across_a_restart(
    server: PostgresServer, tmp_path: pathlib.Path
) -> None:
    """Spend already in the database, and calls of a run that stopped while the database was
    down (their rows in its spool), are seeded into the next run's budgets once the database
    is up; that run's own calls are not counted twice."""
    await asyncio.to_thread(server.start)
    earlier = PostgresStore(server.dsn(), currency="USD")
    prior = [
        make_row(f"prior-{i}", key_id="search", team="search-team", started_at=time.time())
        for i in range(3)
    ]
    earlier.write(prior)
    earlier.close()
    await asyncio.to_thread(server.stop)

    yaml = configured(server, tmp_path)
    async with gateway_process(yaml, tmp_path) as first:
        await complete(first, "first", 4)
        await stop(first)  # its rows stay in the spool: the database is down
    assert (tmp_path / "usage.db.spool").read_text().count("\n") == 4
    async with gateway_process(yaml, tmp_path) as second:
        await complete(second, "second", 5)
        await usage_refused(second)
        await asyncio.to_thread(server.start)
        count, distinct, cost = await until_rows(server.dsn(), 12)
        assert (count, distinct) == (12, 12)
        answer = await settled(second, 12, cost)
        [budget] = answer.budgets
        assert budget.spent == cost  # prior 3, the first run's 4 and this run's 5: once each
        await stop(second)
    assert rows_in(server.dsn()) == (12, 12, cost)
