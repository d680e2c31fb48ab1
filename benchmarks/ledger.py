"""Can the usage ledger's SQLite store keep up, and answer a month's usage quickly? Rows per
second SqliteStore.write takes in batches of 500 (WAL, a file in a temporary directory) while
1,000,000 raw rows are loaded (60 days, 50 keys, 10 models, 3 providers); then the time to
answer one month's usage grouped by key and model from the rollups, next to the same question
asked of the raw rows. Also the writes as the ledger makes them (asyncio.to_thread from a
running loop), and through aiosqlite if it is installed (it is not a dependency).

In-process, no server: about 30 s (`--quick`, 100,000 rows: a few seconds).

What a row per call costs the gateway (its CPU per call, ledger on against off, SQLite and
PostgreSQL): benchmarks/ledger_cost.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib.util
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hapaxd.ledger import LedgerRow, SqliteStore
from hapaxd.ledger.sqlite_store import (
    INSERT_CALL,
    SCHEMA,
    UPSERT_ROLLUP,
    Sums,
    add_to_rollup,
    call_values,
    day_of,
)

END = datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC).timestamp()  # rows end here
TAGS: tuple[dict[str, str], ...] = ({}, {"app": "web"}, {"app": "batch", "env": "prod"})


@dataclasses.dataclass
class Config:
    rows: int = 1_000_000
    batch: int = 500
    days: int = 60
    keys: int = 50
    models: int = 10
    providers: int = 3
    query_rounds: int = 7
    driver_rows: int = 100_000  # for the driver comparison, each on a fresh file

    @classmethod
    def quick(cls) -> Config:
        return cls(rows=100_000, query_rounds=3, driver_rows=20_000)


def batches(config: Config, count: int, seed: int = 1) -> Iterator[list[LedgerRow]]:
    """`count` rows in batches, their start times spread over `config.days` days to END."""
    rng = random.Random(seed)
    span = config.days * 86_400.0
    batch: list[LedgerRow] = []
    for i in range(count):
        key = rng.randrange(config.keys)
        prompt, completion = rng.randrange(10, 4000), rng.randrange(1, 1000)
        failed = rng.random() < 0.02
        batch.append(
            LedgerRow(
                request_id=f"{seed:02d}-{i:09d}",
                started_at=END - span + span * i / count,
                duration_ms=rng.uniform(50, 5000),
                ttft_ms=None,
                door="grpc",
                method="Complete",
                key_id=f"key-{key:02d}",
                team=f"team-{key % 5}",
                tags=TAGS[i % len(TAGS)],
                model=f"model-{rng.randrange(config.models)}",
                provider=f"provider-{rng.randrange(config.providers)}",
                upstream_model="upstream",
                attempts=1,
                prompt_tokens=prompt,
                completion_tokens=0 if failed else completion,
                cached_prompt_tokens=0,
                reasoning_tokens=0,
                cost_nanos=None if rng.random() < 0.05 else prompt * 2500 + completion * 10_000,
                currency="USD",
                energy_joules=prompt * 0.5 + completion * 2.0,
                code="UNAVAILABLE" if failed else "OK",
                reason="NO_PROVIDER" if failed else "",
                shared=rng.random() < 0.03,
            )
        )
        if len(batch) == config.batch:
            yield batch
            batch = []
    if batch:
        yield batch


def load(store: SqliteStore, config: Config) -> dict[str, Any]:
    """Write config.rows rows; rows per second over the store's writes only (not the making of
    the rows), overall and over the last tenth (the table at its largest)."""
    spent, written, tail_spent, tail_rows = 0.0, 0, 0.0, 0
    tail_from = config.rows * 9 // 10
    for batch in batches(config, config.rows):
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
SELECT key_id, model, COUNT(*), SUM(code != 'OK'), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(COALESCE(cost_nanos, 0)), SUM(cost_nanos IS NULL), SUM(COALESCE(energy_joules, 0))
FROM calls WHERE started_at >= ? AND started_at < ? GROUP BY key_id, model
"""


def query(store: SqliteStore, config: Config) -> dict[str, Any]:
    """The last 30 days' usage grouped by key and model: from the rollups (as the API asks)
    and, for comparison, from the raw rows; median milliseconds of config.query_rounds."""
    end = END - 1
    start = end - 29 * 86_400
    start_day, end_day = day_of(start), day_of(end)
    from_rollups, from_raw = [], []
    groups = raw_groups = 0
    db = sqlite3.connect(store.path)  # for the raw rows, and counting the rollups
    for _ in range(config.query_rounds):
        began = time.perf_counter()
        answer = store.usage(start_day, end_day, group_by=("key_id", "model"))
        from_rollups.append((time.perf_counter() - began) * 1000)
        groups = len(answer)
        began = time.perf_counter()
        raw = db.execute(RAW_QUESTION, (END - 30 * 86_400, END)).fetchall()
        from_raw.append((time.perf_counter() - began) * 1000)
        raw_groups = len(raw)
    assert groups == raw_groups, "the rollups and the raw rows disagree on the groups"
    [rollups] = db.execute("SELECT COUNT(*) FROM rollups").fetchone()
    db.close()
    return {
        "days": f"{start_day}..{end_day}",
        "groups": groups,
        "rollup_rows": rollups,
        "rollups_ms": statistics.median(from_rollups),
        "raw_rows_ms": statistics.median(from_raw),
        "rounds": {"rollups_ms": from_rollups, "raw_rows_ms": from_raw},
    }


async def through_threads(store: SqliteStore, config: Config) -> float:
    """Rows per second written as the ledger writes them: each batch by asyncio.to_thread."""
    spent = 0.0
    for batch in batches(config, config.driver_rows, seed=2):
        began = time.perf_counter()
        await asyncio.to_thread(store.write, batch)
        spent += time.perf_counter() - began
    return config.driver_rows / spent


async def through_aiosqlite(path: Path, config: Config) -> float:
    """The same statements and transaction per batch, through aiosqlite's connection."""
    import aiosqlite

    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(f"BEGIN; {SCHEMA} COMMIT;")
        spent = 0.0
        for batch in batches(config, config.driver_rows, seed=2):
            began = time.perf_counter()
            await write_aiosqlite(db, batch)
            spent += time.perf_counter() - began
    return config.driver_rows / spent


async def write_aiosqlite(db: Any, rows: Sequence[LedgerRow]) -> int:
    sums: Sums = {}
    new = 0
    await db.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            day = day_of(row.started_at)
            cursor = await db.execute(INSERT_CALL, call_values(row, day))
            if cursor.rowcount == 1:
                new += 1
                add_to_rollup(sums, day, row)
        await db.executemany(UPSERT_ROLLUP, [key + tuple(s) for key, s in sums.items()])
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return new


def drivers(directory: Path, config: Config) -> dict[str, Any]:
    store = SqliteStore(directory / "threads.db")
    try:
        threads = asyncio.run(through_threads(store, config))
    finally:
        store.close()
    result: dict[str, Any] = {"rows": config.driver_rows, "sqlite3_to_thread_rows_per_s": threads}
    if importlib.util.find_spec("aiosqlite") is None:
        result["aiosqlite_rows_per_s"] = None
    else:
        result["aiosqlite_rows_per_s"] = asyncio.run(
            through_aiosqlite(directory / "aiosqlite.db", config)
        )
    return result


def run(config: Config) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hapax-ledger-bench-") as directory:
        store = SqliteStore(Path(directory) / "usage.db")
        try:
            loaded = load(store, config)
            answered = query(store, config)
        finally:
            store.close()
        size = sum(p.stat().st_size for p in Path(directory).glob("usage.db*"))
        compared = drivers(Path(directory), config)
    return {
        "sqlite": sqlite3.sqlite_version,
        "batch": config.batch,
        "load": loaded,
        "file_mb": size / 1e6,
        "query": answered,
        "drivers": compared,
    }


def format_table(result: dict[str, Any]) -> str:
    from benchmarks.report import figure

    load, question, drivers = result["load"], result["query"], result["drivers"]
    aio = drivers["aiosqlite_rows_per_s"]
    lines = [
        f"Usage ledger: SqliteStore (SQLite {result['sqlite']}, WAL, synchronous=NORMAL), "
        f"batches of {result['batch']}",
        "",
        f"{'rows loaded':<44}{load['rows']:>14,}",
        f"{'rows/s, whole load':<44}{load['rows_per_s']:>14,.0f}",
        f"{'rows/s, last tenth (table at its largest)':<44}"
        f"{figure(load['last_tenth_rows_per_s'], '>14,.0f')}",
        f"{'file size (MB, with WAL)':<44}{result['file_mb']:>14,.0f}",
        "",
        f"One month ({question['days']}) by key and model: {question['groups']} groups, "
        f"median of {len(question['rounds']['rollups_ms'])}",
        f"{'  from the rollups (ms)':<44}{question['rollups_ms']:>14,.1f}"
        f"   ({question['rollup_rows']:,} rollup rows in all)",
        f"{'  from the raw rows, for comparison (ms)':<44}{question['raw_rows_ms']:>14,.1f}",
        "",
        f"Drivers, {drivers['rows']:,} rows each on a fresh file (rows/s)",
        f"{'  sqlite3 in asyncio.to_thread (the ledger)':<44}"
        f"{drivers['sqlite3_to_thread_rows_per_s']:>14,.0f}",
        f"{'  aiosqlite':<44}"
        + (f"{aio:>14,.0f}" if aio is not None else f"{'not installed':>14}"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="rows to load (overrides --quick's)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    if args.rows:
        config.rows = args.rows
    result = run(config)
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"ledger": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
