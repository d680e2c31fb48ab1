"""A usage ledger whose PostgreSQL server is not up yet: making the store asks no server (only a
malformed DSN is refused at once); its first call connects, and until it can, every call raises
an error the store calls unavailable, so a Ledger keeps the rows in its spool and writes each
once when the server comes up. A currency mismatch found on connecting is logged once as an
error and kept: the rows stay in the spool, and the server is not asked again.

`Ledger.before_writes` (the budgets read their spend from the store at start): the job runs
after the rows an earlier run left in the spool are written and before any of this run's, also
when the store is down at first and the job runs late, so what it reads counts every row once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hapaxd.ledger import Ledger
from hapaxd.ledger.postgres_store import CurrencyMismatch, PostgresStore
from tests.ledger.test_postgres_store import raw
from tests.ledger.test_sqlite_store import make_row
from tests.ledger.test_writer import FakeStore, ids, rows, until
from tests.support import postgres
from tests.support.postgres import PostgresMissing, PostgresServer

# The fixtures, by name (a conftest.py would import them).
postgres_server = postgres.postgres_server
postgres_dsn = postgres.postgres_dsn


@pytest.fixture
def late_server() -> Iterator[PostgresServer]:
    """A server with a port of its own, not started (not even initdb'd): the test starts it."""
    try:
        server = PostgresServer()
    except PostgresMissing as missing:
        pytest.fail(str(missing))
    try:
        yield server
    finally:
        server.remove()


async def test_a_store_made_before_its_server_is_up_spools_then_writes_each_row_once(
    late_server: PostgresServer, tmp_path: Path
) -> None:
    with pytest.raises(psycopg.ProgrammingError):  # only the DSN's syntax is checked at once
        PostgresStore(f"{late_server.dsn()}?no_such_option=1")
    store = PostgresStore(late_server.dsn(), currency="USD")  # nothing listens: no error
    with pytest.raises(psycopg.OperationalError) as refused:
        store.write([make_row("probe")])
    assert store.unavailable(refused.value)
    with pytest.raises(psycopg.OperationalError) as refused:
        store.usage("2025-05-01", "2025-05-01")
    assert store.unavailable(refused.value)

    ledger = Ledger(
        store,
        spool_path=tmp_path / "spool.jsonl",
        batch_size=20,
        flush_interval=0.02,
        retry_interval=0.05,
    )
    ledger.start()
    sent = [make_row(f"r-{i:03d}") for i in range(50)]
    for row in sent:
        ledger.record(row)
    await until(lambda: ledger.spooled_rows == 50, within=10)
    assert ledger.written_total == 0 and ledger.dropped_total == 0

    await asyncio.to_thread(late_server.start)  # initdb, then the server on the same port
    await until(lambda: ledger.written_total == 50 and ledger.spooled_rows == 0, within=30)
    await ledger.aclose()
    dsn = late_server.dsn()
    assert raw(dsn, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM calls") == [(50, 50)]
    assert raw(dsn, "SELECT SUM(calls) FROM rollups") == [(50,)]
    assert raw(dsn, "SELECT value FROM meta WHERE key = 'currency'") == [("USD",)]
    assert ledger.dropped_total == 0
    assert not (tmp_path / "spool.jsonl").read_bytes()


def test_a_currency_mismatch_is_logged_once_and_kept_without_asking_again(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    dollars = PostgresStore(postgres_dsn, currency="USD")
    dollars.write([make_row("a")])
    dollars.close()
    euros = PostgresStore(postgres_dsn, currency="EUR")
    with caplog.at_level(logging.ERROR, logger="hapaxd.ledger"):
        with pytest.raises(CurrencyMismatch) as refused:
            euros.write([make_row("b")])
        # The database is told EUR now: a store that asked again would take the row.
        with psycopg.connect(postgres_dsn, autocommit=True) as db:
            db.execute("UPDATE meta SET value = 'EUR' WHERE key = 'currency'")
        for call in (
            lambda: euros.write([make_row("b")]),
            lambda: euros.usage("2025-05-01", "2025-05-01"),
        ):
            with pytest.raises(CurrencyMismatch):
                call()
    assert euros.unavailable(refused.value)  # rows wait in the spool, never dropped
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "keeps costs in USD, not EUR" in errors[0].getMessage()
    assert "spool" in errors[0].getMessage()
    assert raw(postgres_dsn, "SELECT request_id FROM calls") == [("a",)]
    euros.close()


async def test_a_currency_mismatch_keeps_a_ledgers_rows_in_the_spool(
    postgres_dsn: str, tmp_path: Path
) -> None:
    dollars = PostgresStore(postgres_dsn, currency="USD")
    dollars.write([make_row("a")])
    dollars.close()
    ledger = Ledger(
        PostgresStore(postgres_dsn, currency="EUR"),
        spool_path=tmp_path / "spool.jsonl",
        flush_interval=0.02,
        retry_interval=0.05,
    )
    ledger.start()
    for row in rows(10):
        ledger.record(row)
    await until(lambda: ledger.spooled_rows == 10)
    await ledger.aclose(timeout=2)
    assert ledger.dropped_total == 0 and ledger.written_total == 0
    assert len((tmp_path / "spool.jsonl").read_text().splitlines()) == 10


# --- before_writes ------------------------------------------------------------------------------


async def left_in_a_spool(path: Path, count: int) -> None:
    """A spool an earlier run left: `count` rows ("old-*") its store never took."""
    down = FakeStore()
    down.failing = True
    earlier = Ledger(down, spool_path=path, flush_interval=0.01)
    earlier.start()
    for row in rows(count, "old"):
        earlier.record(row)
    await earlier.aclose(timeout=1)
    assert earlier.spooled_rows == count


async def test_before_writes_runs_after_the_earlier_spool_and_before_this_runs_rows(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.jsonl"
    await left_in_a_spool(spool, 30)
    store = FakeStore()
    ledger = Ledger(store, spool_path=spool, batch_size=10, flush_interval=0.01)
    ledger.start()
    seen: list[list[str]] = []

    async def job() -> None:
        seen.append(list(store.ids))

    for row in rows(5, "new"):  # recorded before the job: they wait for it
        ledger.record(row)
    assert await ledger.before_writes(job)
    assert seen == [ids(30, "old")]
    await until(lambda: store.ids == ids(30, "old") + ids(5, "new"))
    await ledger.aclose()
    assert seen == [ids(30, "old")]


async def test_before_writes_waits_for_a_store_that_is_down_then_runs_before_any_new_row(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.jsonl"
    await left_in_a_spool(spool, 12)
    store = FakeStore()
    store.failing = True  # down at start
    ledger = Ledger(store, spool_path=spool, batch_size=5, flush_interval=0.01, retry_interval=0.05)
    ledger.start()
    seen: list[list[str]] = []

    async def job() -> None:
        if store.failing:
            raise OSError("connection refused")  # as the store's own error: unavailable
        seen.append(list(store.ids))

    assert not await ledger.before_writes(job)
    for row in rows(20, "new"):
        ledger.record(row)
    await until(lambda: ledger.spooled_rows == 32)  # the earlier 12 and this run's 20
    assert seen == [] and store.ids == []
    store.failing = False
    await until(lambda: store.ids == ids(12, "old") + ids(20, "new"))
    assert seen == [ids(12, "old")]  # once, and before any of this run's rows
    for row in rows(3, "after"):
        ledger.record(row)
    await until(lambda: len(store.ids) == 35)
    await ledger.aclose()
    assert seen == [ids(12, "old")] and ledger.dropped_total == 0


async def test_a_before_writes_job_that_fails_for_itself_is_logged_and_rows_still_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.01)
    ledger.start()

    async def job() -> None:
        raise KeyError("a bug of the job's")

    with caplog.at_level(logging.ERROR, logger="hapaxd.ledger"):
        assert await ledger.before_writes(job)
    assert any("before the first write" in r.getMessage() for r in caplog.records)
    for row in rows(4):
        ledger.record(row)
    await until(lambda: store.ids == ids(4))
    await ledger.aclose()
