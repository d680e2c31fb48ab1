"""Which driver for the usage ledger's PostgreSQL store, and does it keep up? A throwaway
PostgreSQL server on loopback (benchmarks/postgres_server.py; fsync on, as in production, unless
`--no-fsync`). Rows per second PostgresStore.write takes in batches of 500 while 1,000,000 raw
rows are loaded (the rows of benchmarks/ledger.py: 60 days, 50 keys, 10 models, 3 providers),
then the time to answer one month's usage grouped by key and model from the rollups, next to the
same question asked of the raw rows.

The drivers, each on a fresh database with the same rows, best of `driver_rounds` (rows/s):
psycopg 3 as the store runs it (PostgresStore.write through asyncio.to_thread, as the ledger
calls it, and called directly), and asyncpg on the event loop running the store's statement
(WRITE_BATCH: the batch as arrays through unnest); and with each driver the COPY variant (the
batch copied into a temporary table, then the same statement reading that).

About a minute (`--quick`, 100,000 rows: about 15 s). Needs initdb and pg_ctl (Debian:
postgresql).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import re
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg

from benchmarks.ledger import END, batches
from benchmarks.ledger import Config as RowsConfig
from benchmarks.postgres_server import PostgresMissing, PostgresServer
from hapaxd.ledger import LedgerRow
from hapaxd.ledger.postgres_store import CALL_TYPES, WRITE_BATCH, PostgresStore, batch_columns
from hapaxd.ledger.sqlite_store import day_of


def numbered(query: str) -> str:
    """`query` with asyncpg's placeholders ($1, $2...) for psycopg's (%b)."""
    numbers = itertools.count(1)
    return re.sub("%b", lambda _: f"${next(numbers)}", query)


ASYNCPG_BATCH = numbered(WRITE_BATCH)
# The COPY variant: WRITE_BATCH reading the batch from a temporary table instead of the arrays.
TEMPORARY = (
    "CREATE TEMPORARY TABLE batch_in ("
    + ", ".join(f"{name} {kind}" for name, kind in CALL_TYPES)
    + ") ON COMMIT DELETE ROWS"
)
FROM_COPY = (
    'WITH batch AS (SELECT * FROM batch_in ORDER BY request_id COLLATE "C")'
    + WRITE_BATCH[WRITE_BATCH.index("), new AS (") + 1 :]
)


@dataclasses.dataclass
class Config:
    rows: int = 1_000_000
    batch: int = 500
    days: int = 60
    keys: int = 50
    models: int = 10
    providers: int = 3
    query_rounds: int = 7
    driver_rows: int = 100_000  # for the driver comparison, each on a fresh database
    driver_rounds: int = 3
    durable: bool = True  # fsync on

    @classmethod
    def quick(cls) -> Config:
        return cls(rows=100_000, query_rounds=3, driver_rows=20_000, driver_rounds=2)

    def rows_config(self) -> RowsConfig:
        """The row maker's config (benchmarks/ledger.py), for the same rows."""
        return RowsConfig(
            rows=self.rows,
            batch=self.batch,
            days=self.days,
            keys=self.keys,
            models=self.models,
            providers=self.providers,
        )


def load(store: PostgresStore, config: Config) -> dict[str, Any]:
    """Write config.rows rows; rows per second over the store's writes only (not the making of
    the rows), overall and over the last tenth (the table at its largest)."""
    spent, written, tail_spent, tail_rows = 0.0, 0, 0.0, 0
    tail_from = config.rows * 9 // 10
    for batch in batches(config.rows_config(), config.rows):
        began = time.perf_counter()
        written += store.write(batch)
        took = time.perf_counter() - began
        spent += took
        if written > tail_from:
            tail_spent, tail_rows = tail_spent + took, tail_rows + len(batch)
    assert written == config.rows, "rows were lost or counted twice"
    return {
        "rows": written,
        "seconds": spent,
        "rows_per_s": written / spent,
        "last_tenth_rows_per_s": tail_rows / tail_spent if tail_spent else float("nan"),
    }


RAW_QUESTION = """
SELECT key_id, model, COUNT(*), COUNT(*) FILTER (WHERE code <> 'OK'), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(COALESCE(cost_nanos, 0)),
       COUNT(*) FILTER (WHERE cost_nanos IS NULL), SUM(COALESCE(energy_joules, 0))
FROM calls WHERE started_at >= %s AND started_at < %s GROUP BY key_id, model
"""


def query(store: PostgresStore, dsn: str, config: Config) -> dict[str, Any]:
    """The last 30 days' usage grouped by key and model: from the rollups (as the API asks)
    and, for comparison, from the raw rows; median milliseconds of config.query_rounds."""
    end = END - 1
    start = end - 29 * 86_400
    start_day, end_day = day_of(start), day_of(end)
    from_rollups, from_raw = [], []
    groups = raw_groups = 0
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")  # as autovacuum would have by now: fair plans for both
        for _ in range(config.query_rounds):
            began = time.perf_counter()
            answer = store.usage(start_day, end_day, group_by=("key_id", "model"))
            from_rollups.append((time.perf_counter() - began) * 1000)
            groups = len(answer)
            began = time.perf_counter()
            raw = db.execute(RAW_QUESTION, (END - 30 * 86_400, END)).fetchall()
            from_raw.append((time.perf_counter() - began) * 1000)
            raw_groups = len(raw)
        found = db.execute("SELECT COUNT(*) FROM rollups").fetchone()
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()
    assert groups == raw_groups, "the rollups and the raw rows disagree on the groups"
    return {
        "days": f"{start_day}..{end_day}",
        "groups": groups,
        "rollup_rows": found[0] if found else 0,
        "database_mb": (size[0] if size else 0) / 1e6,
        "rollups_ms": statistics.median(from_rollups),
        "raw_rows_ms": statistics.median(from_raw),
        "rounds": {"rollups_ms": from_rollups, "raw_rows_ms": from_raw},
    }


def driver_batches(config: Config) -> list[list[LedgerRow]]:
    """The rows every driver writes, made once."""
    rows = dataclasses.replace(config, rows=config.driver_rows).rows_config()
    return list(batches(rows, config.driver_rows, seed=2))


async def psycopg_to_thread(dsn: str, work: list[list[LedgerRow]]) -> float:
    """The store as the ledger calls it: each batch by asyncio.to_thread."""
    store = PostgresStore(dsn)
    try:
        spent, written = 0.0, 0
        for batch in work:
            began = time.perf_counter()
            written += await asyncio.to_thread(store.write, batch)
            spent += time.perf_counter() - began
    finally:
        store.close()
    return checked(written, work) / spent


async def psycopg_direct(dsn: str, work: list[list[LedgerRow]]) -> float:
    """The store called on this thread: the driver without the hop to a worker thread."""
    store = PostgresStore(dsn)
    try:
        spent, written = 0.0, 0
        for batch in work:
            began = time.perf_counter()
            written += store.write(batch)
            spent += time.perf_counter() - began
    finally:
        store.close()
    return checked(written, work) / spent


async def psycopg_copy(dsn: str, work: list[list[LedgerRow]]) -> float:
    """psycopg on this thread, COPY (binary) into a temporary table, then the store's statement
    reading it, in one transaction: the COPY variant below, for the driver rather than the
    statement to make the difference."""
    make_tables(dsn)
    names = [name for name, _ in CALL_TYPES]
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(TEMPORARY)
        spent, written = 0.0, 0
        for batch in work:
            began = time.perf_counter()
            with db.transaction(), db.cursor() as cursor:
                with cursor.copy(f"COPY batch_in ({', '.join(names)}) FROM STDIN BINARY") as copy:
                    copy.set_types([kind for _, kind in CALL_TYPES])
                    for record in zip(*batch_columns(ordered(batch)), strict=True):
                        copy.write_row(record)
                found = cursor.execute(FROM_COPY).fetchone()
            written += found[0] if found else 0
            spent += time.perf_counter() - began
    return checked(written, work) / spent


def make_tables(dsn: str) -> None:
    """The store's tables in the database at `dsn` (a store makes them when it first connects)."""
    store = PostgresStore(dsn)
    try:
        store.usage("2025-01-01", "2025-01-01")
    finally:
        store.close()


def ordered(batch: list[LedgerRow]) -> list[LedgerRow]:
    """A batch as the store sends it: the first row of each request id, in request id order."""
    first: dict[str, LedgerRow] = {}
    for row in batch:
        first.setdefault(row.request_id, row)
    return [first[i] for i in sorted(first)]


async def asyncpg_unnest(dsn: str, work: list[list[LedgerRow]]) -> float:
    """asyncpg on the loop, the store's statement: one round trip a batch, in binary."""
    import asyncpg

    make_tables(dsn)
    db = await asyncpg.connect(dsn)
    try:
        statement = await db.prepare(ASYNCPG_BATCH)
        spent, written = 0.0, 0
        for batch in work:
            began = time.perf_counter()
            written += await statement.fetchval(*batch_columns(ordered(batch)))
            spent += time.perf_counter() - began
    finally:
        await db.close()
    return checked(written, work) / spent


async def asyncpg_copy(dsn: str, work: list[list[LedgerRow]]) -> float:
    """asyncpg on the loop, COPY into a temporary table, then the store's statement reading it,
    in one transaction."""
    import asyncpg

    make_tables(dsn)
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(TEMPORARY)
        names = [name for name, _ in CALL_TYPES]
        spent, written = 0.0, 0
        for batch in work:
            began = time.perf_counter()
            records = list(zip(*batch_columns(ordered(batch)), strict=True))
            async with db.transaction():
                await db.copy_records_to_table("batch_in", records=records, columns=names)
                written += await db.fetchval(FROM_COPY)
            spent += time.perf_counter() - began
    finally:
        await db.close()
    return checked(written, work) / spent


def checked(written: int, work: list[list[LedgerRow]]) -> int:
    assert written == sum(map(len, work)), "rows were lost or counted twice"
    return written


DRIVERS: dict[str, Callable[[str, list[list[LedgerRow]]], Coroutine[Any, Any, float]]] = {
    "psycopg_to_thread": psycopg_to_thread,
    "psycopg_direct": psycopg_direct,
    "psycopg_copy": psycopg_copy,
    "asyncpg_unnest": asyncpg_unnest,
    "asyncpg_copy": asyncpg_copy,
}


def drivers(server: PostgresServer, config: Config) -> dict[str, Any]:
    """Each driver `driver_rounds` times, in turn (so a warming server favours none), each time
    on a fresh database; the best round of each."""
    work = driver_batches(config)
    rounds: dict[str, list[float]] = {name: [] for name in DRIVERS}
    for _ in range(config.driver_rounds):
        for name, measure in DRIVERS.items():
            rounds[name].append(asyncio.run(measure(server.create_database(), work)))
    result: dict[str, Any] = {"rows": config.driver_rows, "rounds": rounds}
    result.update({f"{name}_rows_per_s": max(found) for name, found in rounds.items()})
    return result


def run(config: Config) -> dict[str, Any]:
    server = PostgresServer(durable=config.durable)
    try:
        server.start()
        dsn = server.create_database("usage")
        store = PostgresStore(dsn)
        try:
            loaded = load(store, config)
            answered = query(store, dsn, config)
        finally:
            store.close()
        with psycopg.connect(dsn) as db:
            version = db.info.server_version
        compared = drivers(server, config)
    finally:
        server.remove()
    import asyncpg

    return {
        "postgres": f"{version // 10000}.{version % 10000}",
        "psycopg": psycopg.__version__,
        "asyncpg": asyncpg.__version__,
        "fsync": config.durable,
        "batch": config.batch,
        "load": loaded,
        "query": answered,
        "drivers": compared,
    }


def format_table(result: dict[str, Any]) -> str:
    from benchmarks.report import figure

    load, question, drivers = result["load"], result["query"], result["drivers"]
    lines = [
        f"Usage ledger: PostgresStore (PostgreSQL {result['postgres']}, loopback, fsync "
        f"{'on' if result['fsync'] else 'off'}), batches of {result['batch']}",
        "",
        f"{'rows loaded':<44}{load['rows']:>14,}",
        f"{'rows/s, whole load':<44}{load['rows_per_s']:>14,.0f}",
        f"{'rows/s, last tenth (table at its largest)':<44}"
        f"{figure(load['last_tenth_rows_per_s'], '>14,.0f')}",
        f"{'database size (MB)':<44}{question['database_mb']:>14,.0f}",
        "",
        f"One month ({question['days']}) by key and model: {question['groups']} groups, "
        f"median of {len(question['rounds']['rollups_ms'])}",
        f"{'  from the rollups (ms)':<44}{question['rollups_ms']:>14,.1f}"
        f"   ({question['rollup_rows']:,} rollup rows in all)",
        f"{'  from the raw rows, for comparison (ms)':<44}{question['raw_rows_ms']:>14,.1f}",
        "",
        f"Drivers, {drivers['rows']:,} rows each on a fresh database, best of "
        f"{len(drivers['rounds']['psycopg_to_thread'])} (rows/s)",
        f"{'  psycopg ' + result['psycopg'] + ', store in asyncio.to_thread':<44}"
        f"{drivers['psycopg_to_thread_rows_per_s']:>14,.0f}",
        f"{'  psycopg, store called directly':<44}{drivers['psycopg_direct_rows_per_s']:>14,.0f}",
        f"{'  psycopg, COPY to a temporary table':<44}{drivers['psycopg_copy_rows_per_s']:>14,.0f}",
        f"{'  asyncpg ' + result['asyncpg'] + ', the same statement':<44}"
        f"{drivers['asyncpg_unnest_rows_per_s']:>14,.0f}",
        f"{'  asyncpg, COPY to a temporary table':<44}{drivers['asyncpg_copy_rows_per_s']:>14,.0f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger_postgres", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="rows to load (overrides --quick's)")
    parser.add_argument("--no-fsync", action="store_true", help="the server without fsync")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    if args.rows:
        config.rows = args.rows
    config.durable = not args.no_fsync
    try:
        result = run(config)
    except PostgresMissing as missing:
        print(missing, file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"ledger_postgres": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
