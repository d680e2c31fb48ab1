"""SqliteStore: the usage ledger in an embedded SQLite file. Raw rows in `calls`, one per request
id, and their daily sums in `rollups`, which usage questions are answered from. Blocking: the
writer (writer.py) calls it from a worker thread. Stdlib sqlite3 only; nothing else of hapaxd.

Exactly once: a row is inserted with INSERT OR IGNORE on its request id, and added to its
rollup only when that insert took it, in the same transaction; so a row written twice (the
spool replayed after a crash) is kept and counted once. That holds while the raw row is kept:
a row written again after `prune` deleted it would be counted again.

Durability: WAL with synchronous=NORMAL: a committed batch survives the process being killed;
a power cut may lose the last batches committed before it.

The response cache: a call answered from it is rowed with no tokens and cost 0, and with what it
saved (`saved_cost_nanos`, `saved_tokens`); the rollups count its hits (`cache_hits`) and sum what
they saved, so nothing is counted twice. A file made before these columns existed (schema version
1) gets them when it is opened, with defaults that describe its old rows ('' for cache, 0 saved).
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from hapaxd.ledger.rows import LedgerRow, UsageRow

SCHEMA_VERSION = 2  # 2: the response cache's columns
OPEN_RETRY_SECONDS = 10.0  # how long opening waits out other processes opening the file
DAY = 86_400.0
PRUNE_EVERY = 3_600.0  # seconds between the prunes `write` does by itself

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,            -- 'currency': the one currency of every cost in the file
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    request_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,        -- unix seconds
    day TEXT NOT NULL,               -- YYYY-MM-DD, UTC, of started_at
    duration_ms REAL NOT NULL,
    ttft_ms REAL,
    door TEXT NOT NULL,
    method TEXT NOT NULL,
    key_id TEXT NOT NULL,
    team TEXT NOT NULL,
    tags TEXT NOT NULL,              -- a JSON object
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER,              -- NULL: unpriced
    currency TEXT NOT NULL,
    energy_joules REAL,              -- NULL: unknown
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    shared INTEGER NOT NULL,
    cache TEXT NOT NULL DEFAULT '',  -- hit, semantic_hit, miss, refresh, bypass; '': not used
    saved_cost_nanos INTEGER,        -- a hit's saving; NULL: none, or unpriced
    saved_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);
CREATE TABLE IF NOT EXISTS rollups (
    day TEXT NOT NULL,
    key_id TEXT NOT NULL,
    team TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,     -- priced rows only
    unpriced_calls INTEGER NOT NULL,
    energy_joules REAL NOT NULL,     -- rows with a figure only
    shared_calls INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL DEFAULT 0,
    saved_cost_nanos INTEGER NOT NULL DEFAULT 0,  -- hits with a priced saving only
    saved_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_id, team, model, provider)
) WITHOUT ROWID;
"""
# The columns a file of an earlier schema version lacks, by table, as ADD COLUMN gives them (the
# same definitions, and order, as SCHEMA's: a file brought up to date is a new file's twin).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "calls": (
        ("cache", "TEXT NOT NULL DEFAULT ''"),
        ("saved_cost_nanos", "INTEGER"),
        ("saved_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ),
    "rollups": (
        ("cache_hits", "INTEGER NOT NULL DEFAULT 0"),
        ("saved_cost_nanos", "INTEGER NOT NULL DEFAULT 0"),
        ("saved_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ),
}
CACHE_HITS = ("hit", "semantic_hit")  # a LedgerRow's `cache` when the cache answered
# WITHOUT ROWID: the rollups are stored in their key's order, so a range of days is one
# contiguous read of the table itself, no index lookups.

CALL_COLUMNS = (
    "request_id, started_at, day, duration_ms, ttft_ms, door, method, key_id, team, tags, "
    "model, provider, upstream_model, attempts, prompt_tokens, completion_tokens, "
    "cached_prompt_tokens, reasoning_tokens, cost_nanos, currency, energy_joules, code, "
    "reason, shared, cache, saved_cost_nanos, saved_tokens"
)
INSERT_CALL = (
    f"INSERT OR IGNORE INTO calls ({CALL_COLUMNS}) "
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS.split(', ')))})"
)
GROUPS = ("day", "key_id", "team", "model", "provider")
SUMS = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "unpriced_calls",
    "energy_joules",
    "shared_calls",
    "cache_hits",
    "saved_cost_nanos",
    "saved_tokens",
)
UPSERT_ROLLUP = (
    f"INSERT INTO rollups ({', '.join(GROUPS + SUMS)}) "
    f"VALUES ({', '.join('?' * (len(GROUPS) + len(SUMS)))}) "
    f"ON CONFLICT ({', '.join(GROUPS)}) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in SUMS)
)


# A batch's rollup sums, by rollup key (day, key_id, team, model, provider), in SUMS' order.
Sums: TypeAlias = dict[tuple[str, str, str, str, str], list[int | float]]


def day_of(started_at: float) -> str:
    """The UTC day of a unix time, as YYYY-MM-DD."""
    return datetime.datetime.fromtimestamp(started_at, datetime.UTC).date().isoformat()


class SqliteStore:
    """The ledger's SQLite file at `path` (its directory is made if missing). Raw rows older
    than `retention_days` are deleted (rollups are kept): when the store opens, then at most
    once an hour as `write` is called; None keeps them all. One connection, used by one thread
    at a time (a lock), whichever thread that is."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_days: int | None = None,
        clock: Callable[[], float] = time.time,
        currency: str | None = None,
    ) -> None:
        """`currency`: the prices' currency. A file holds costs in one currency only (its sums
        would mix them otherwise): the first store to open it sets it, and opening it with
        another raises ValueError."""
        self.path = Path(path)
        self.retention_days = retention_days
        self._clock = clock
        self._lock = threading.Lock()
        self._days: dict[int, str] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level None: no implicit transactions; write() opens and ends its own.
        self._db = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._prepare()
            if currency is not None:
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('currency', ?)", (currency,)
                )
                (kept,) = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'currency'"
                ).fetchone()
                if kept != currency:
                    raise ValueError(
                        f"the usage ledger {self.path} keeps costs in {kept}, not {currency}: "
                        "give the new currency a ledger of its own (ledger.path)"
                    )
        except BaseException:
            self._db.close()
            raise
        self._pruned_at = self._clock()
        self.prune(self._pruned_at)

    def _prepare(self) -> None:
        """WAL mode and the schema, up to date. Several processes may open one new file at once
        (the workers of `serve --workers`): SQLite answers "database is locked" to all but one
        of them for some of these steps whatever the busy timeout, so each step is tried again
        for up to OPEN_RETRY_SECONDS."""
        steps = (
            lambda: self._db.execute("PRAGMA journal_mode=WAL"),
            lambda: self._db.execute("PRAGMA synchronous=NORMAL"),
            lambda: self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;"),
            self._migrate,
        )
        for step in steps:
            deadline = time.monotonic() + OPEN_RETRY_SECONDS
            while True:
                try:
                    step()
                    break
                except sqlite3.OperationalError as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    busy = "locked" in str(exc) or "busy" in str(exc)
                    if not busy or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _migrate(self) -> None:
        """Bring a file an earlier version made up to date: add the columns it lacks (its rows
        get their defaults), in one transaction, and set its schema version."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in ADDED_COLUMNS.items():
                found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns:
                    if name not in found:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.rollback()
            raise

    def unavailable(self, error: BaseException) -> bool:
        """Locked past the timeout, a full disk, an I/O error, a damaged file: the database
        cannot take rows now. An IntegrityError, or a value SQLite cannot hold, is the row's."""
        return isinstance(error, OSError) or (
            isinstance(error, sqlite3.DatabaseError)
            and not isinstance(error, sqlite3.IntegrityError | sqlite3.InterfaceError)
        )

    def write(self, rows: Sequence[LedgerRow]) -> int:
        """Store `rows` in one transaction; how many were new (a request id already stored, or
        twice in `rows`, is stored and counted once). Raises, with nothing written: sqlite3.Error
        (a database locked past 5 s, a full disk), or the error of a value SQLite cannot hold."""
        sums: Sums = {}
        with self._lock:
            cursor = self._db.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")  # the write lock now, not halfway through
                new = 0
                for row in rows:
                    day = self._day(row.started_at)
                    cursor.execute(INSERT_CALL, call_values(row, day))
                    if cursor.rowcount == 1:
                        new += 1
                        add_to_rollup(sums, day, row)
                cursor.executemany(UPSERT_ROLLUP, [key + tuple(s) for key, s in sums.items()])
                cursor.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.rollback()
                raise
            finally:
                cursor.close()
        now = self._clock()
        if self.retention_days is not None and now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now)
        return new

    def prune(self, now: float) -> int:
        """Delete the raw rows that started more than `retention_days` before `now`; how many.
        The rollups keep their sums."""
        if self.retention_days is None:
            return 0
        cutoff = now - self.retention_days * DAY
        with self._lock:
            cursor = self._db.execute("DELETE FROM calls WHERE started_at < ?", (cutoff,))
            return cursor.rowcount

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
        """Totals from the rollups for the days `start_day` to `end_day` (YYYY-MM-DD, UTC, both
        included), only rows matching the filters given, one dict per group of `group_by`
        (among "day", "key_id", "team", "model", "provider"), in the groups' order. Each dict
        has the group's values and its sums: calls, errors, prompt_tokens, completion_tokens,
        cached_prompt_tokens, reasoning_tokens, cost_nanos (priced calls only), unpriced_calls,
        energy_joules, shared_calls, cache_hits (calls the response cache answered, exactly or
        semantically), saved_cost_nanos (what those hits would have cost: priced ones only) and
        saved_tokens. With no group_by: one dict, the totals (zeros when no call
        matched)."""
        for day in (start_day, end_day):
            datetime.date.fromisoformat(day)  # ValueError for anything but YYYY-MM-DD
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown:
            raise ValueError(f"cannot group usage by {', '.join(unknown)}: only by {GROUPS}")
        groups = list(dict.fromkeys(group_by))
        where, params = ["day BETWEEN ? AND ?"], [start_day, end_day]
        for column, value in (
            ("key_id", key_id),
            ("team", team),
            ("model", model),
            ("provider", provider),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        # Column names come from GROUPS and SUMS only, never from the caller.
        sums = ", ".join(f"COALESCE(SUM({name}), 0) AS {name}" for name in SUMS)
        query = f"SELECT {', '.join([*groups, sums])} FROM rollups WHERE {' AND '.join(where)}"
        if groups:
            query += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
        with self._lock:
            cursor = self._db.execute(query, params)
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        totals = [dict(zip(names, values, strict=True)) for values in found]
        for total in totals:  # SUM of nothing is the integer 0
            total["energy_joules"] = float(total["energy_joules"])
        return totals

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _day(self, started_at: float) -> str:
        number = int(started_at // DAY)
        day = self._days.get(number)
        if day is None:
            if len(self._days) > 64:
                self._days.clear()
            day = self._days[number] = day_of(started_at)
        return day


def call_values(row: LedgerRow, day: str) -> tuple[object, ...]:
    """A row as INSERT_CALL's parameters."""
    return (
        row.request_id,
        row.started_at,
        day,
        row.duration_ms,
        row.ttft_ms,
        row.door,
        row.method,
        row.key_id,
        row.team,
        json.dumps(dict(row.tags), ensure_ascii=False, sort_keys=True),
        row.model,
        row.provider,
        row.upstream_model,
        row.attempts,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_prompt_tokens,
        row.reasoning_tokens,
        row.cost_nanos,
        row.currency,
        row.energy_joules,
        row.code,
        row.reason,
        int(row.shared),
        row.cache,
        row.saved_cost_nanos,
        row.saved_tokens,
    )


def add_to_rollup(sums: Sums, day: str, row: LedgerRow) -> None:
    """Add `row` to its rollup's sums in `sums` (UPSERT_ROLLUP's parameters, by key)."""
    key = (day, row.key_id, row.team, row.model, row.provider)
    this = (
        1,
        int(row.code != "OK"),
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_prompt_tokens,
        row.reasoning_tokens,
        0 if row.cost_nanos is None else row.cost_nanos,
        int(row.cost_nanos is None),
        0.0 if row.energy_joules is None else row.energy_joules,
        int(row.shared),
        int(row.cache in CACHE_HITS),
        0 if row.saved_cost_nanos is None else row.saved_cost_nanos,
        row.saved_tokens,
    )
    total = sums.get(key)
    if total is None:
        sums[key] = list(this)
    else:
        for i, value in enumerate(this):
            total[i] += value
