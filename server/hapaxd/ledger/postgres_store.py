"""PostgresStore: the usage ledger in a PostgreSQL database that several gateway replicas write
to, with the same tables and the same answers as SqliteStore (sqlite_store.py). Blocking, through
psycopg 3: the writer (writer.py) calls it from a worker thread. Nothing else of hapaxd.

Exactly once, across replicas: a batch is one statement, so one transaction. It inserts the
rows with ON CONFLICT (request_id) DO NOTHING and adds to the rollups only the rows that insert
RETURNED, so a row another replica wrote first (committed, or committing meanwhile: the insert
waits for it) is neither stored nor counted again. That holds while the raw row is kept: a row
written again after `prune` deleted it would be counted again. Rows are inserted in request id
order and rollups upserted in key order, the same order in every replica, so two replicas
writing overlapping batches wait for each other but never deadlock.

Durability is the server's: a batch is committed (synchronous_commit as configured there) before
`write` returns.

Lazy: making a store touches no network (only the DSN's syntax is checked), so a gateway starts
while its database is down. The first `write` or `usage` connects, makes the schema if missing and
checks the currency; until then, and whenever the server cannot be reached, they raise an error
`unavailable` recognises: the writer keeps the rows in its spool and writes them once the server
answers, and a usage query is refused as unavailable. A connection lost later is made again by the
next call, the same way.

A currency mismatch found when connecting (the database keeps costs in another currency than
`prices.currency`) is a configuration error, not an outage: it is logged once as an error, and
from then on every call raises the same CurrencyMismatch at once, without asking the server again
(only a restart, with another currency or another database, can change it). `unavailable` counts
it as the store being unable to take rows, so the writer keeps them in its spool instead of
dropping them; its periodic warning repeats the reason.

A database an earlier version made (schema version 1: without the response cache's columns) gets
them when a store first connects, with ALTER TABLE ... ADD COLUMN IF NOT EXISTS under the same
advisory lock as the schema; their defaults describe the old rows, and rows an earlier version
still writes meanwhile. A database that has them needs no DDL.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hapaxd.ledger.rows import LedgerRow, UsageRow
from hapaxd.ledger.sqlite_store import CACHE_HITS, DAY, GROUPS, PRUNE_EVERY, SUMS

log = logging.getLogger("hapaxd.ledger")

SCHEMA_VERSION = 2  # 2: the response cache's columns
# pg_advisory_xact_lock's key while the schema is made: b"hapaxled" as a bigint.
SCHEMA_LOCK = int.from_bytes(b"hapaxled", "big")
# libpq's settings unless the DSN gives its own: give up connecting after 5 s, and notice a
# server gone silent (a host down, a network cut) within about a minute, not TCP's 15 minutes.
CONNECTION_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "application_name": "hapaxd-ledger",
}

# COLLATE "C" on the key columns: byte order, as SQLite's, so groups come back in the same order;
# and an index that an operating system's new collation rules cannot invalidate.
SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,            -- 'currency': the one currency of every cost here
        value TEXT NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS calls (
        request_id TEXT COLLATE "C" PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,   -- unix seconds
        day DATE NOT NULL,                      -- UTC, of started_at
        duration_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        door TEXT NOT NULL,
        method TEXT NOT NULL,
        key_id TEXT NOT NULL,
        team TEXT NOT NULL,
        tags JSONB NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cached_prompt_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_nanos BIGINT,                      -- NULL: unpriced
        currency TEXT NOT NULL,
        energy_joules DOUBLE PRECISION,         -- NULL: unknown
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        shared BOOLEAN NOT NULL,
        cache TEXT NOT NULL DEFAULT '',         -- hit, semantic_hit, miss, refresh, bypass; ''
        saved_cost_nanos BIGINT,                -- a hit's saving; NULL: none, or unpriced
        saved_tokens BIGINT NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)",
    # fillfactor: room on each page for the updated versions of its rows (HOT updates), as every
    # batch updates the rollups it touches.
    """
    CREATE TABLE IF NOT EXISTS rollups (
        day DATE NOT NULL,
        key_id TEXT COLLATE "C" NOT NULL,
        team TEXT COLLATE "C" NOT NULL,
        model TEXT COLLATE "C" NOT NULL,
        provider TEXT COLLATE "C" NOT NULL,
        calls BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cached_prompt_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_nanos BIGINT NOT NULL,             -- priced rows only
        unpriced_calls BIGINT NOT NULL,
        energy_joules DOUBLE PRECISION NOT NULL, -- rows with a figure only
        shared_calls BIGINT NOT NULL,
        cache_hits BIGINT NOT NULL DEFAULT 0,
        saved_cost_nanos BIGINT NOT NULL DEFAULT 0, -- hits with a priced saving only
        saved_tokens BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (day, key_id, team, model, provider)
    ) WITH (fillfactor = 80)""",
)

RELATIONS = ("meta", "calls", "calls_started_at", "rollups")  # what SCHEMA makes
# The columns a database of an earlier schema version lacks, by table, as SCHEMA defines them
# (and in its order: a database brought up to date is a new database's twin).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "calls": (
        ("cache", "TEXT NOT NULL DEFAULT ''"),
        ("saved_cost_nanos", "BIGINT"),
        ("saved_tokens", "BIGINT NOT NULL DEFAULT 0"),
    ),
    "rollups": (
        ("cache_hits", "BIGINT NOT NULL DEFAULT 0"),
        ("saved_cost_nanos", "BIGINT NOT NULL DEFAULT 0"),
        ("saved_tokens", "BIGINT NOT NULL DEFAULT 0"),
    ),
}

# The columns of `calls`, each with the type of the array its values are sent in.
CALL_TYPES = (
    ("request_id", "text"),
    ("started_at", "float8"),
    ("day", "date"),
    ("duration_ms", "float8"),
    ("ttft_ms", "float8"),
    ("door", "text"),
    ("method", "text"),
    ("key_id", "text"),
    ("team", "text"),
    ("tags", "text"),  # JSON text, made jsonb in the statement
    ("model", "text"),
    ("provider", "text"),
    ("upstream_model", "text"),
    ("attempts", "int8"),
    ("prompt_tokens", "int8"),
    ("completion_tokens", "int8"),
    ("cached_prompt_tokens", "int8"),
    ("reasoning_tokens", "int8"),
    ("cost_nanos", "int8"),
    ("currency", "text"),
    ("energy_joules", "float8"),
    ("code", "text"),
    ("reason", "text"),
    ("shared", "bool"),
    ("cache", "text"),
    ("saved_cost_nanos", "int8"),
    ("saved_tokens", "int8"),
)
CALL_COLUMNS = ", ".join(name for name, _ in CALL_TYPES)
# Each new row's share of its rollup's sums, in SUMS' order.
ADDED = (
    "count(*)",
    "count(*) FILTER (WHERE code <> 'OK')",
    "sum(prompt_tokens)",
    "sum(completion_tokens)",
    "sum(cached_prompt_tokens)",
    "sum(reasoning_tokens)",
    "COALESCE(sum(cost_nanos), 0)",
    "count(*) FILTER (WHERE cost_nanos IS NULL)",
    "COALESCE(sum(energy_joules), 0)",
    "count(*) FILTER (WHERE shared)",
    f"count(*) FILTER (WHERE cache IN ({', '.join(repr(c) for c in CACHE_HITS)}))",
    "COALESCE(sum(saved_cost_nanos), 0)",
    "sum(saved_tokens)",
)
KEY = ", ".join(GROUPS)
# The whole batch as one statement: the batch's columns as arrays (one parameter each, %b:
# binary); the rows inserted in the arrays' order (request id order); the new ones, as
# RETURNING gives them, summed by rollup key and added to the rollups in key order; the count
# of new rows. One statement is one transaction: all of it or none.
WRITE_BATCH = f"""
WITH batch AS (
    SELECT * FROM unnest({", ".join(f"%b::{kind}[]" for _, kind in CALL_TYPES)})
        AS b ({CALL_COLUMNS})
), new AS (
    INSERT INTO calls ({CALL_COLUMNS})
    SELECT {", ".join(f"{n}::jsonb" if n == "tags" else n for n, _ in CALL_TYPES)} FROM batch
    ON CONFLICT (request_id) DO NOTHING
    RETURNING {KEY}, code, prompt_tokens, completion_tokens, cached_prompt_tokens,
        reasoning_tokens, cost_nanos, energy_joules, shared, cache, saved_cost_nanos,
        saved_tokens
), added AS (
    INSERT INTO rollups ({KEY}, {", ".join(SUMS)})
    SELECT {KEY}, {", ".join(ADDED)} FROM new GROUP BY {KEY} ORDER BY {KEY}
    ON CONFLICT ({KEY}) DO UPDATE SET
        {", ".join(f"{name} = rollups.{name} + EXCLUDED.{name}" for name in SUMS)}
)
SELECT count(*) FROM new
"""

EPOCH = datetime.date(1970, 1, 1)


@functools.lru_cache(maxsize=64)
def day_number(number: int) -> datetime.date:
    """The UTC day `number` days after 1970-01-01 (a unix time // DAY)."""
    return EPOCH + datetime.timedelta(days=number)


class CurrencyMismatch(ValueError):
    """The database keeps its costs in another currency (`kept`) than the gateway's prices."""

    def __init__(self, message: str, kept: str | None) -> None:
        super().__init__(message)
        self.kept = kept


class PostgresStore:
    """The ledger's tables in the PostgreSQL database at `dsn` (a libpq URL or key=value
    string), made if missing when the store first connects. Raw rows older than
    `retention_days` are deleted (rollups are kept): on the first connection, then at most once
    an hour as `write` is called; None keeps them all. One connection, made by the first call
    that needs it, used by one thread at a time (a lock); lost, it is made again by the next
    call."""

    def __init__(
        self,
        dsn: str,
        *,
        retention_days: int | None = None,
        clock: Callable[[], float] = time.time,
        currency: str | None = None,
    ) -> None:
        """`currency`: the prices' currency. A database holds costs in one currency only (its
        sums would mix them otherwise): the first store to connect to it sets it; a store with
        another raises CurrencyMismatch from every call. Nothing here touches the network:
        psycopg.ProgrammingError only for a DSN that cannot be parsed."""
        self._conninfo = make_conninfo("", **{**CONNECTION_DEFAULTS, **conninfo_to_dict(dsn)})
        self.retention_days = retention_days
        self._clock = clock
        self._currency = currency
        self._lock = threading.Lock()
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None
        self._closed = False
        self._refused: CurrencyMismatch | None = None  # found on connecting: for good
        self._pruned_at: float | None = None  # None: not connected yet

    def unavailable(self, error: BaseException) -> bool:
        """The server down or unreachable, shutting down, out of connections, of disk, read
        only; a deadlock or a serialization failure; our statement refused (a privilege
        missing): the database cannot take rows now. A data error (a number out of range, a NUL
        in a string) or a constraint violation is the row's, as is an error raised before
        anything reached the server (a value that cannot be sent). CurrencyMismatch (the
        database's currency is not ours) counts as unavailable too: the rows are kept, not
        dropped, until a restart fixes the configuration."""
        return isinstance(error, OSError | CurrencyMismatch) or (
            isinstance(error, psycopg.Error)
            and not isinstance(error, psycopg.DataError | psycopg.IntegrityError)
        )

    def write(self, rows: Sequence[LedgerRow]) -> int:
        """Store `rows` in one transaction; how many were new (a request id already stored, by
        this replica or another, or twice in `rows`, is stored and counted once: the first).
        Raises, with nothing written: psycopg.OperationalError (the server unreachable, or the
        connection lost: made again next time), CurrencyMismatch, psycopg.DataError or another
        error for a value the database cannot hold."""
        first: dict[str, LedgerRow] = {}
        for row in rows:
            first.setdefault(row.request_id, row)
        if not first:
            return 0
        columns = batch_columns([first[i] for i in sorted(first)])
        with self._lock:
            with self._using() as db:
                found = db.execute(WRITE_BATCH, columns).fetchone()
        new = int(found[0]) if found is not None else 0
        now = self._clock()
        pruned_at = self._pruned_at if self._pruned_at is not None else now
        if self.retention_days is not None and now - pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now)
        return new

    def prune(self, now: float) -> int:
        """Delete the raw rows that started more than `retention_days` before `now`; how many.
        The rollups keep their sums."""
        if self.retention_days is None:
            return 0
        with self._lock:
            with self._using() as db:
                return self._prune(db, now)

    def _prune(self, db: psycopg.Connection[tuple[Any, ...]], now: float) -> int:
        if self.retention_days is None:
            return 0
        cutoff = now - self.retention_days * DAY
        return db.execute("DELETE FROM calls WHERE started_at < %s", (cutoff,)).rowcount

    def usage(
        self,
        start_day: str,
        end_day: str,
        *,
        key_id: str | None = None,
        team: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        group_by: Sequence[str] = (),
    ) -> list[UsageRow]:
        """Totals from the rollups, as SqliteStore.usage answers them: for the days `start_day`
        to `end_day` (YYYY-MM-DD, UTC, both included), only rows matching the filters given,
        one dict per group of `group_by` in the groups' order (text in byte order), or with no
        group_by one dict, the totals (zeros when no call matched)."""
        days = [datetime.date.fromisoformat(day) for day in (start_day, end_day)]
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown:
            raise ValueError(f"cannot group usage by {', '.join(unknown)}: only by {GROUPS}")
        groups = list(dict.fromkeys(group_by))
        where, params = ["day BETWEEN %s AND %s"], list[object](days)
        for column, value in (
            ("key_id", key_id),
            ("team", team),
            ("model", model),
            ("provider", provider),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        # Column names come from GROUPS and SUMS only, never from the caller. SUM of a bigint
        # is a numeric: cast back, so the answer holds ints as SqliteStore's does.
        kinds = {name: "float8" if name == "energy_joules" else "int8" for name in SUMS}
        sums = ", ".join(f"COALESCE(SUM({n}), 0)::{kinds[n]} AS {n}" for n in SUMS)
        query = f"SELECT {', '.join([*groups, sums])} FROM rollups WHERE {' AND '.join(where)}"
        if groups:
            query += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
        with self._lock:
            with self._using() as db:
                cursor = db.execute(query, params)
                names = [column.name for column in cursor.description or ()]
                found = cursor.fetchall()
        totals: list[UsageRow] = []
        for values in found:
            total = dict(zip(names, values, strict=True))
            if "day" in total:
                total["day"] = total["day"].isoformat()
            totals.append(total)
        return totals

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, made (with the schema, and the currency checked) if there is none;
        the first one also prunes. The lock held."""
        if self._closed:
            raise psycopg.OperationalError("the usage ledger's store is closed")
        if self._refused is not None:
            raise self._refused
        if self._db is None or self._db.closed:
            db = psycopg.connect(self._conninfo, autocommit=True)
            try:
                prepare(db, self._currency)
                if self._pruned_at is None:
                    self._pruned_at = self._clock()
                    self._prune(db, self._pruned_at)
            except CurrencyMismatch as mismatch:
                db.close()
                self._refused = mismatch
                log.error(
                    "usage ledger: %s. No row is written to it: they are kept in the spool "
                    "until the gateway restarts with prices.currency %s or another "
                    "ledger.postgres_url; usage queries are refused meanwhile",
                    mismatch,
                    mismatch.kept,
                )
                raise
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _using(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """The connection for one statement; dropped if the statement lost it, so the next
        call connects again. The lock held."""
        db = self._connection()
        try:
            yield db
        except BaseException:
            if db.broken or db.closed:
                db.close()
                self._db = None
            raise


def prepare(db: psycopg.Connection[tuple[Any, ...]], currency: str | None) -> None:
    """Make the tables if missing, and check the currency, in one transaction. With the tables
    there, no DDL: a role that may only read and write them (an operator made them) can open
    the store. The advisory lock makes replicas opening a new database at once take turns:
    CREATE TABLE IF NOT EXISTS run concurrently can still fail on the catalog's unique
    indexes. Tables of an earlier schema version get the columns they lack (`migrate`)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        checks = ", ".join("to_regclass(%s) IS NULL" for _ in RELATIONS)
        if any(db.execute(f"SELECT {checks}", RELATIONS).fetchone() or ()):
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
        migrate(db)
        if currency is None:
            return
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('currency', %s) ON CONFLICT DO NOTHING",
            (currency,),
        )
        found = db.execute("SELECT value FROM meta WHERE key = 'currency'").fetchone()
        kept = found[0] if found is not None else None
    if kept != currency:
        raise CurrencyMismatch(
            f"the usage ledger's database keeps costs in {kept}, not {currency}: give the new "
            "currency a database of its own",
            kept,
        )


def migrate(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Add the columns the tables lack (made by an earlier version), and note the schema
    version; nothing, no DDL, when they have them all. In prepare's transaction, its advisory
    lock held."""
    tables = tuple(ADDED_COLUMNS)
    found = db.execute(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE a.attrelid = ANY(ARRAY[" + ", ".join("to_regclass(%s)" for _ in tables) + "]) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        tables,
    ).fetchall()
    have, altered = set(found), False
    for table, columns in ADDED_COLUMNS.items():
        missing = [(name, kind) for name, kind in columns if (table, name) not in have]
        if missing:
            db.execute(
                f"ALTER TABLE {table} "
                + ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in missing)
            )
            altered = True
    if altered:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(SCHEMA_VERSION),),
        )


def batch_columns(rows: Sequence[LedgerRow]) -> list[list[Any]]:
    """`rows` as WRITE_BATCH's parameters: one list per column of `calls`. Numbers made floats
    or ints here: an array holds one type, and a row built with 3 for 3.0 would mix them."""
    columns: list[list[Any]] = [[] for _ in CALL_TYPES]
    (
        request_id, started_at, day, duration_ms, ttft_ms, door, method, key_id, team, tags,
        model, provider, upstream_model, attempts, prompt_tokens, completion_tokens,
        cached_prompt_tokens, reasoning_tokens, cost_nanos, currency, energy_joules, code,
        reason, shared, cache, saved_cost_nanos, saved_tokens,
    ) = columns  # fmt: skip
    for row in rows:
        request_id.append(row.request_id)
        started_at.append(float(row.started_at))
        day.append(day_number(int(row.started_at // DAY)))
        duration_ms.append(float(row.duration_ms))
        ttft_ms.append(None if row.ttft_ms is None else float(row.ttft_ms))
        door.append(row.door)
        method.append(row.method)
        key_id.append(row.key_id)
        team.append(row.team)
        tags.append(json.dumps(dict(row.tags), ensure_ascii=False, sort_keys=True))
        model.append(row.model)
        provider.append(row.provider)
        upstream_model.append(row.upstream_model)
        attempts.append(int(row.attempts))
        prompt_tokens.append(int(row.prompt_tokens))
        completion_tokens.append(int(row.completion_tokens))
        cached_prompt_tokens.append(int(row.cached_prompt_tokens))
        reasoning_tokens.append(int(row.reasoning_tokens))
        cost_nanos.append(None if row.cost_nanos is None else int(row.cost_nanos))
        currency.append(row.currency)
        energy_joules.append(None if row.energy_joules is None else float(row.energy_joules))
        code.append(row.code)
        reason.append(row.reason)
        shared.append(bool(row.shared))
        cache.append(row.cache)
        saved_cost_nanos.append(None if row.saved_cost_nanos is None else int(row.saved_cost_nanos))
        saved_tokens.append(int(row.saved_tokens))
    return columns
