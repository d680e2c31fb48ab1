"""PostgresStore: each request id stored and counted once, also when two replicas write the same
rows at once; daily rollups that agree with the raw rows; the same usage answers as SqliteStore
for the same rows, cache hits and their savings included; raw rows pruned past their retention;
one currency per database; a database of the previous schema brought up to date; a value the
database cannot hold is the row's fault, a stopped server is "unavailable", and a Ledger over a
server stopped and started again loses and doubles nothing.

A real PostgreSQL server on loopback (tests/support/postgres.py), a new database per test.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hapaxd.ledger import Ledger, LedgerRow, SqliteStore
from hapaxd.ledger.postgres_store import CurrencyMismatch, PostgresStore
from hapaxd.ledger.sqlite_store import GROUPS
from tests.ledger.test_sqlite_store import (
    DAY,
    HIT,
    MAY_1,
    SUMS,
    cache_fields,
    make_row,
    random_rows,
    recount,
)
from tests.ledger.test_writer import until
from tests.support import postgres
from tests.support.postgres import PostgresServer

# The fixtures, by name (a conftest.py would import them; this file is their only user).
postgres_server = postgres.postgres_server
postgres_dsn = postgres.postgres_dsn


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_dsn)
    yield store
    store.close()


def raw(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as db:
        return db.execute(query, params).fetchall()


def rollups(dsn: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """The rollups table, by key (the day as YYYY-MM-DD)."""
    found = raw(dsn, f"SELECT {', '.join(GROUPS)}, {', '.join(SUMS)} FROM rollups")
    return {(row[0].isoformat(), *row[1:5]): dict(zip(SUMS, row[5:], strict=True)) for row in found}


def assert_rollups_match(dsn: str, sent: list[LedgerRow]) -> None:
    expected, found = recount(sent), rollups(dsn)
    assert found.keys() == expected.keys()
    for key, sums in found.items():
        want = expected[key]
        assert {k: v for k, v in sums.items() if k != "energy_joules"} == {
            k: v for k, v in want.items() if k != "energy_joules"
        }
        assert sums["energy_joules"] == pytest.approx(want["energy_joules"])


def test_the_tables_have_sqlite_stores_columns(
    store: PostgresStore, postgres_dsn: str, tmp_path: Path
) -> None:
    store.usage("2025-05-01", "2025-05-01")  # the first call connects and makes them
    SqliteStore(tmp_path / "usage.db").close()
    with sqlite3.connect(tmp_path / "usage.db") as lite:
        for table in ("meta", "calls", "rollups"):
            columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            found = raw(
                postgres_dsn,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                table,
            )
            assert [name for (name,) in found] == columns


def test_a_request_id_written_twice_is_stored_and_counted_once(
    store: PostgresStore, postgres_dsn: str
) -> None:
    assert store.write([make_row("a"), make_row("b")]) == 2
    assert store.write([make_row("a"), make_row("c")]) == 1  # "a" again in a second batch
    assert store.write([make_row("d"), make_row("d", prompt_tokens=999)]) == 1  # twice in one
    assert store.write([make_row("b")]) == 0
    assert store.write([]) == 0
    assert raw(postgres_dsn, "SELECT request_id, prompt_tokens FROM calls ORDER BY 1") == [
        ("a", 100),
        ("b", 100),
        ("c", 100),
        ("d", 100),  # the first of the two
    ]
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total["calls"] == 4 and total["prompt_tokens"] == 400 and total["cost_nanos"] == 4_000
    [(day, tags, shared)] = raw(
        postgres_dsn, "SELECT day::text, tags, shared FROM calls WHERE request_id = 'a'"
    )
    assert (day, tags, shared) == ("2025-05-01", {"app": "web"}, False)


def test_a_reopened_database_keeps_rows_and_still_counts_each_once(postgres_dsn: str) -> None:
    first = PostgresStore(postgres_dsn)
    first.write([make_row("a"), make_row("b")])
    first.close()
    second = PostgresStore(postgres_dsn)
    assert second.write([make_row("b"), make_row("c")]) == 1
    assert second.usage("2025-05-01", "2025-05-01")[0]["calls"] == 3
    second.close()


def test_a_batch_that_fails_writes_nothing(store: PostgresStore, postgres_dsn: str) -> None:
    store.write([make_row("a")])
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):  # beyond a bigint, last row
        store.write([make_row("b"), make_row("c", prompt_tokens=2**70)])
    assert raw(postgres_dsn, "SELECT request_id FROM calls") == [("a",)]
    assert store.usage("2025-05-01", "2025-05-01")[0]["calls"] == 1
    assert store.write([make_row("b")]) == 1  # and the store carries on


def test_rollups_match_a_recount_of_the_raw_rows(store: PostgresStore, postgres_dsn: str) -> None:
    rows = random_rows(2000)
    rng = random.Random(3)
    # Batches of random sizes, some rows sent again (a replayed spool) in later batches.
    sent, i, new = [], 0, 0
    while i < len(rows):
        size = rng.randrange(1, 300)
        batch = rows[i : i + size] + rng.sample(rows[: i + 1], k=min(i + 1, rng.randrange(20)))
        sent.extend(batch)
        new += store.write(batch)
        i += size
    assert new == len(rows)
    assert_rollups_match(postgres_dsn, sent)
    assert len(rollups(postgres_dsn)) > 100
    # and against the raw rows: the same sums, from a GROUP BY over `calls`
    [(calls, cost, unpriced)] = raw(
        postgres_dsn,
        "SELECT COUNT(*), SUM(COALESCE(cost_nanos, 0)), COUNT(*) FILTER (WHERE cost_nanos IS NULL)"
        " FROM calls",
    )
    [whole] = store.usage("2025-05-01", "2025-05-31")
    assert (whole["calls"], whole["cost_nanos"], whole["unpriced_calls"]) == (
        calls,
        cost,
        unpriced,
    )
    assert calls == len(rows)


def test_unpriced_calls_are_counted_apart_not_as_free(
    store: PostgresStore, postgres_dsn: str
) -> None:
    store.write(
        [
            make_row("priced", cost_nanos=5_000),
            make_row("free", cost_nanos=0),
            make_row("unpriced-1", cost_nanos=None),
            make_row("unpriced-2", cost_nanos=None, energy_joules=None),
        ]
    )
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total["calls"] == 4
    assert total["cost_nanos"] == 5_000
    assert total["unpriced_calls"] == 2
    assert total["energy_joules"] == pytest.approx(7.5)  # the unknown figure adds nothing
    costs = dict(raw(postgres_dsn, "SELECT request_id, cost_nanos FROM calls"))
    assert costs == {"priced": 5_000, "free": 0, "unpriced-1": None, "unpriced-2": None}


# Keys whose order differs between byte order and a language's collation.
ODD_KEYS = ("key-a", "Key-B", "_z", "é", "ключ", "key a", "")


def parity_rows(count: int) -> list[LedgerRow]:
    rng = random.Random(11)
    rows = []
    for i in range(count):
        fields: dict[str, Any] = {
            "started_at": MAY_1 + rng.uniform(0, 4 * DAY),
            "key_id": rng.choice(ODD_KEYS),
            "team": rng.choice(["a", "B", "c"]),
            "model": rng.choice(["m1", "M2", "m-3"]),
            "provider": rng.choice(["openai", "anthropic", "Ollama"]),
            "prompt_tokens": rng.randrange(5000),
            "cost_nanos": rng.choice([None, 0, rng.randrange(1, 10**7)]),
            "energy_joules": rng.choice([None, rng.uniform(0, 50)]),
            "code": rng.choice(["OK", "OK", "INTERNAL"]),
            "shared": rng.random() < 0.1,
        }
        rows.append(make_row(f"p-{i}", **{**fields, **cache_fields(rng)}))
    return rows


def test_cache_hits_are_counted_with_what_they_saved_as_sqlite_counts_them(
    store: PostgresStore, postgres_dsn: str, tmp_path: Path
) -> None:
    lite = SqliteStore(tmp_path / "usage.db")
    rows = [
        make_row("miss", cache="miss", cost_nanos=1_000, prompt_tokens=100, completion_tokens=20),
        make_row("hit", **HIT),
        make_row("near", **{**HIT, "cache": "semantic_hit", "saved_cost_nanos": None}),
        make_row("bypass", cache="bypass"),
        make_row("plain"),
    ]
    assert store.write(rows) == lite.write(rows) == 5
    assert store.write([make_row("hit", **HIT)]) == 0  # a hit written again: counted once
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total == lite.usage("2025-05-01", "2025-05-01")[0]
    assert (total["calls"], total["cache_hits"], total["cost_nanos"]) == (5, 2, 3_000)
    assert (total["saved_cost_nanos"], total["saved_tokens"]) == (1_000, 240)
    assert total["prompt_tokens"] == 300  # the hits' tokens are the miss's: not counted again
    assert raw(
        postgres_dsn,
        "SELECT request_id, cache, cost_nanos, saved_cost_nanos, saved_tokens FROM calls "
        "ORDER BY 1",
    ) == [
        ("bypass", "bypass", 1_000, None, 0),
        ("hit", "hit", 0, 1_000, 120),
        ("miss", "miss", 1_000, None, 0),
        ("near", "semantic_hit", 0, None, 120),
        ("plain", "", 1_000, None, 0),
    ]
    lite.close()


# The tables of the version before the response cache (schema version 1), as it made them.
SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE calls (
        request_id TEXT COLLATE "C" PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL,
        day DATE NOT NULL, duration_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION,
        door TEXT NOT NULL, method TEXT NOT NULL, key_id TEXT NOT NULL, team TEXT NOT NULL,
        tags JSONB NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL, attempts BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL, cached_prompt_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL, cost_nanos BIGINT, currency TEXT NOT NULL,
        energy_joules DOUBLE PRECISION, code TEXT NOT NULL, reason TEXT NOT NULL,
        shared BOOLEAN NOT NULL
    )""",
    "CREATE INDEX calls_started_at ON calls (started_at)",
    """CREATE TABLE rollups (
        day DATE NOT NULL, key_id TEXT COLLATE "C" NOT NULL, team TEXT COLLATE "C" NOT NULL,
        model TEXT COLLATE "C" NOT NULL, provider TEXT COLLATE "C" NOT NULL,
        calls BIGINT NOT NULL, errors BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL, cached_prompt_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL,
        unpriced_calls BIGINT NOT NULL, energy_joules DOUBLE PRECISION NOT NULL,
        shared_calls BIGINT NOT NULL,
        PRIMARY KEY (day, key_id, team, model, provider)
    ) WITH (fillfactor = 80)""",
    "INSERT INTO meta VALUES ('schema_version', '1'), ('currency', 'USD')",
)
# A row as the previous version inserted it (naming its columns), and its rollup.
OLD_CALL = (
    "INSERT INTO calls (request_id, started_at, day, duration_ms, ttft_ms, door, method, key_id, "
    "team, tags, model, provider, upstream_model, attempts, prompt_tokens, completion_tokens, "
    "cached_prompt_tokens, reasoning_tokens, cost_nanos, currency, energy_joules, code, reason, "
    "shared) VALUES (%s, 1746061200.0, '2025-05-01', 100.0, NULL, 'grpc', 'Complete', 'k1', "
    "'search', '{}', 'default', 'openai', 'gpt-4o-mini', 1, 100, 20, 10, 5, 1000, 'USD', 2.5, "
    "'OK', '', false)"
)
OLD_ROLLUP = (
    "INSERT INTO rollups (day, key_id, team, model, provider, calls, errors, prompt_tokens, "
    "completion_tokens, cached_prompt_tokens, reasoning_tokens, cost_nanos, unpriced_calls, "
    "energy_joules, shared_calls) VALUES ('2025-05-01', 'k1', 'search', 'default', 'openai', 1, "
    "0, 100, 20, 10, 5, 1000, 0, 2.5, 0) ON CONFLICT (day, key_id, team, model, provider) DO "
    "UPDATE SET calls = rollups.calls + 1, cost_nanos = rollups.cost_nanos + 1000"
)


def test_a_database_of_the_previous_schema_opens_and_takes_new_rows(
    postgres_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        for statement in SCHEMA_V1:
            db.execute(statement)
        db.execute(OLD_CALL, ("old",))
        db.execute(OLD_ROLLUP)
    store = connected(PostgresStore(postgres_dsn, currency="USD"))
    assert raw(postgres_dsn, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    # Its tables now have a new database's columns (SqliteStore's), in the same order.
    SqliteStore(tmp_path / "usage.db").close()
    with sqlite3.connect(tmp_path / "usage.db") as lite:
        for table in ("calls", "rollups"):
            columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            found = raw(
                postgres_dsn,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                table,
            )
            assert [name for (name,) in found] == columns
    assert raw(postgres_dsn, "SELECT cache, saved_cost_nanos, saved_tokens FROM calls") == [
        ("", None, 0)
    ]
    [before] = store.usage("2025-05-01", "2025-05-01")
    assert (before["calls"], before["cache_hits"], before["saved_cost_nanos"]) == (1, 0, 0)
    assert store.write([make_row("old"), make_row("new"), make_row("hit", **HIT)]) == 2
    # A replica still running the previous version (a rolling upgrade) writes as it did.
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(OLD_CALL, ("from-an-old-replica",))
        db.execute(OLD_ROLLUP)
    [after] = store.usage("2025-05-01", "2025-05-01")
    assert after["calls"] == 4 and after["cost_nanos"] == 3_000
    assert (after["cache_hits"], after["saved_cost_nanos"], after["saved_tokens"]) == (
        1,
        1_000,
        120,
    )
    store.close()
    again = connected(PostgresStore(postgres_dsn, currency="USD"))  # nothing more to do
    assert again.usage("2025-05-01", "2025-05-01") == [after]
    again.close()


def test_usage_answers_are_sqlite_stores_for_the_same_rows(
    store: PostgresStore, tmp_path: Path
) -> None:
    lite = SqliteStore(tmp_path / "usage.db")
    rows = parity_rows(1500)
    for i in range(0, len(rows), 200):
        batch = rows[i : i + 200] + rows[i // 2 : i // 2 + 10]  # some again
        assert store.write(batch) == lite.write(batch)
    groupings: list[tuple[str, ...]] = [
        (),
        ("day",),
        ("key_id", "model"),
        ("model", "key_id"),
        ("provider", "team", "day"),
        GROUPS,
        ("team", "team"),
    ]
    filters: list[dict[str, str]] = [
        {},
        {"key_id": "Key-B"},
        {"key_id": ""},
        {"team": "a", "model": "M2"},
        {"provider": "Ollama"},
        {"key_id": "nobody"},
    ]
    ranges = [
        ("2025-05-01", "2025-05-31"),
        ("2025-05-02", "2025-05-03"),
        ("2025-06-01", "2025-06-30"),
    ]
    asked = 0
    for (start, end), group_by, where in itertools.product(ranges, groupings, filters):
        want = lite.usage(start, end, group_by=group_by, **where)
        found = store.usage(start, end, group_by=group_by, **where)
        question = (start, end, group_by, where)
        assert [{k: v for k, v in t.items() if k != "energy_joules"} for t in found] == [
            {k: v for k, v in t.items() if k != "energy_joules"} for t in want
        ], question
        assert [t["energy_joules"] for t in found] == pytest.approx(
            [t["energy_joules"] for t in want]
        ), question
        for total in found:  # ints and a float, as SqliteStore answers: no Decimal
            assert {type(total[k]) for k in SUMS if k != "energy_joules"} == {int}, question
            assert type(total["energy_joules"]) is float, question
        asked += 1
    assert asked == len(ranges) * len(groupings) * len(filters)
    with pytest.raises(ValueError, match="cannot group"):
        store.usage("2025-05-01", "2025-05-03", group_by=["request_id"])
    with pytest.raises(ValueError):
        store.usage("May 1", "2025-05-03")
    lite.close()


def test_prune_deletes_old_raw_rows_and_keeps_the_rollups(postgres_dsn: str) -> None:
    now = MAY_1 + 30 * DAY
    store = PostgresStore(postgres_dsn, retention_days=7, clock=lambda: now)
    store.write(
        [
            make_row("old", started_at=now - 10 * DAY),
            make_row("edge", started_at=now - 7 * DAY + 1),
            make_row("new", started_at=now - DAY),
        ]
    )
    assert store.prune(now) == 1
    assert store.prune(now) == 0
    assert raw(postgres_dsn, "SELECT request_id FROM calls ORDER BY 1") == [("edge",), ("new",)]
    [total] = store.usage("2025-05-01", "2025-06-30")
    assert total["calls"] == 3  # the rollups still count the pruned row
    store.close()


def test_no_retention_keeps_every_raw_row(store: PostgresStore, postgres_dsn: str) -> None:
    store.write([make_row("ancient", started_at=1.0)])
    assert store.prune(MAY_1) == 0
    assert raw(postgres_dsn, "SELECT day::text FROM calls") == [("1970-01-01",)]


def test_writes_prune_by_themselves_at_most_hourly_and_connecting_prunes(
    postgres_dsn: str,
) -> None:
    clock = [MAY_1 + 30 * DAY]
    store = PostgresStore(postgres_dsn, retention_days=1, clock=lambda: clock[0])
    store.write([make_row("old", started_at=clock[0] - 2 * DAY)])
    clock[0] += 60  # a minute later: not yet
    store.write([make_row("new", started_at=clock[0])])
    assert len(raw(postgres_dsn, "SELECT * FROM calls")) == 2
    clock[0] += 3600
    store.write([make_row("newer", started_at=clock[0])])
    assert raw(postgres_dsn, "SELECT request_id FROM calls ORDER BY 1") == [("new",), ("newer",)]
    store.close()
    later = PostgresStore(postgres_dsn, retention_days=1, clock=lambda: clock[0] + 3 * DAY)
    assert raw(postgres_dsn, "SELECT COUNT(*) FROM calls") == [(2,)]  # made: not connected yet
    later.usage("2025-05-01", "2025-05-01")  # its first connection prunes
    later.close()
    assert raw(postgres_dsn, "SELECT COUNT(*) FROM calls") == [(0,)]


def connected(store: PostgresStore) -> PostgresStore:
    """`store`, connected (a store connects on its first call)."""
    store.usage("2025-05-01", "2025-05-01")
    return store


def test_the_first_store_pins_the_currency(postgres_dsn: str) -> None:
    connected(PostgresStore(postgres_dsn, currency="USD")).close()
    euros = PostgresStore(postgres_dsn, currency="EUR")  # made: the database not asked yet
    for call in (lambda: euros.write([make_row("a")]), lambda: connected(euros)):
        with pytest.raises(CurrencyMismatch, match="keeps costs in USD, not EUR") as refused:
            call()
        assert euros.unavailable(refused.value)  # the rows are kept (spooled), not dropped
    euros.close()
    connected(PostgresStore(postgres_dsn, currency="USD")).close()
    connected(PostgresStore(postgres_dsn)).close()  # no prices: no currency to check
    assert raw(postgres_dsn, "SELECT value FROM meta WHERE key = 'currency'") == [("USD",)]
    assert raw(postgres_dsn, "SELECT COUNT(*) FROM calls") == [(0,)]


def test_stores_opening_a_new_database_at_once_all_open(postgres_dsn: str) -> None:
    count = 6
    start, failures = threading.Barrier(count), []
    opened: list[PostgresStore] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(connected(PostgresStore(postgres_dsn, currency="USD")))
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == [] and len(opened) == count
    for store in opened:
        store.close()


def test_a_role_that_may_only_use_the_tables_opens_the_store(postgres_dsn: str) -> None:
    """Tables an operator made: a role with no right to create anything opens the store and
    writes; a role that may not write is "unavailable" (the rows wait), not a row's fault."""
    connected(PostgresStore(postgres_dsn, currency="USD")).close()
    database = postgres_dsn.rsplit("/", 1)[1]
    writer, reader = f"{database}_writer", f"{database}_reader"
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(f"CREATE ROLE {writer} LOGIN")
        db.execute(f"CREATE ROLE {reader} LOGIN")
        db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON meta, calls, rollups TO {writer}")
        db.execute(f"GRANT SELECT ON meta, calls, rollups TO {reader}")
    as_writer = PostgresStore(postgres_dsn.replace("postgres@", f"{writer}@"), currency="USD")
    assert as_writer.write([make_row("a")]) == 1
    as_writer.close()
    as_reader = PostgresStore(postgres_dsn.replace("postgres@", f"{reader}@"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        as_reader.write([make_row("b")])
    assert as_reader.unavailable(refused.value)
    assert as_reader.usage("2025-05-01", "2025-05-01")[0]["calls"] == 1
    as_reader.close()


@pytest.mark.parametrize(
    "row",
    [
        make_row("nul", key_id="a\x00b"),
        make_row("nul-in-tags", tags={"app": "a\x00b"}),
        make_row("too-big", prompt_tokens=2**63),
        make_row("surrogate", team="\ud800"),
        make_row("nan-start", started_at=float("nan")),
    ],
    ids=lambda row: row.request_id,
)
def test_a_value_the_database_cannot_hold_is_the_rows_fault(
    store: PostgresStore, row: LedgerRow
) -> None:
    with pytest.raises(Exception) as refused:
        store.write([make_row("fine"), row])
    assert not store.unavailable(refused.value)
    assert store.write([make_row("fine")]) == 1  # nothing of that batch was written


def test_a_stopped_server_is_unavailable_and_the_store_connects_again(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    assert store.write([make_row("before")]) == 1
    postgres_server.stop()
    try:
        for _ in range(2):  # the connection cut, then no server to connect to
            with pytest.raises(psycopg.OperationalError) as refused:
                store.write([make_row("while-down")])
            assert store.unavailable(refused.value)
        with pytest.raises(psycopg.OperationalError):
            store.usage("2025-05-01", "2025-05-01")
    finally:
        postgres_server.start()
    assert store.write([make_row("while-down"), make_row("after")]) == 2
    assert store.usage("2025-05-01", "2025-05-01")[0]["calls"] == 3


def test_two_writers_with_overlapping_batches_store_each_row_once(postgres_dsn: str) -> None:
    """Two replicas (a store each, in threads of their own) write every row, in batches of
    different sizes and orders, at the same time: each row is stored and counted once."""
    rows = random_rows(3000, seed=5)
    writers = [PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)]
    start, new, failures = threading.Barrier(2), [0, 0], []

    def write_all(n: int) -> None:
        order = rows[:]
        random.Random(n).shuffle(order)
        size = (150, 230)[n]
        start.wait()
        try:
            for i in range(0, len(order), size):
                new[n] += writers[n].write(order[i : i + size])
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=write_all, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert failures == []
    assert sum(new) == len(rows)  # between them, each row new once
    assert raw(postgres_dsn, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM calls") == [
        (len(rows), len(rows))
    ]
    assert_rollups_match(postgres_dsn, rows)
    for writer in writers:
        writer.close()


async def test_a_ledger_spools_while_the_server_is_down_and_delivers_once_it_is_back(
    postgres_dsn: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    written: list[int] = []
    ledger = Ledger(
        PostgresStore(postgres_dsn),
        spool_path=tmp_path / "spool.jsonl",
        batch_size=50,
        flush_interval=0.02,
        retry_interval=0.05,
        on_written=written.append,
    )
    ledger.start()
    rows = [make_row(f"r-{i:04d}") for i in range(300)]

    for row in rows[:100]:
        ledger.record(row)
    await until(lambda: ledger.written_total == 100)
    await asyncio.to_thread(postgres_server.stop)
    try:
        for row in rows[100:200]:
            ledger.record(row)
        await until(lambda: ledger.spooled_rows == 100)  # the store refused: they wait
        assert ledger.written_total == 100 and ledger.dropped_total == 0
    finally:
        await asyncio.to_thread(postgres_server.start)
    for row in rows[200:]:
        ledger.record(row)
    await until(lambda: ledger.written_total == 300 and ledger.spooled_rows == 0)
    await ledger.aclose()
    assert ledger.dropped_total == 0 and sum(written) == 300
    assert raw(postgres_dsn, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM calls") == [
        (300, 300)
    ]
    assert_rollups_match(postgres_dsn, rows)
    assert not (tmp_path / "spool.jsonl").read_bytes()  # the spool emptied
