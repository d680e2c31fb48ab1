"""SqliteStore: each request id stored and counted once, daily rollups that agree with the raw
rows, unpriced calls kept apart from free ones, cache hits counted with what they saved, usage
questions answered from the rollups, raw rows pruned past their retention while the rollups keep
their sums, and a file of the previous schema opened and brought up to date.

A real SQLite file under tmp_path; no event loop.
"""

from __future__ import annotations

import collections
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hapaxd.ledger import LedgerRow, SqliteStore
from hapaxd.ledger.sqlite_store import day_of

DAY = 86_400.0
MAY_1 = 1_746_057_600.0  # 2025-05-01T00:00:00Z
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


def make_row(request_id: str = "r1", **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "request_id": request_id,
        "started_at": MAY_1 + 3600,
        "duration_ms": 120.5,
        "ttft_ms": None,
        "door": "grpc",
        "method": "Complete",
        "key_id": "k1",
        "team": "search",
        "tags": {"app": "web"},
        "model": "default",
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "attempts": 1,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_prompt_tokens": 10,
        "reasoning_tokens": 5,
        "cost_nanos": 1_000,
        "currency": "USD",
        "energy_joules": 2.5,
        "code": "OK",
        "reason": "",
        "shared": False,
    }
    values.update(fields)
    return LedgerRow(**values)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = SqliteStore(tmp_path / "state" / "usage.db")
    yield store
    store.close()


def raw(path: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query, params).fetchall()


def test_the_file_is_made_with_its_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "usage.db"
    store = SqliteStore(path)
    store.write([make_row(tags={"team": "search", "note": "é"})])
    store.close()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    [(day, tags, shared)] = raw(path, "SELECT day, tags, shared FROM calls")
    assert day == "2025-05-01" and shared == 0
    assert '"team": "search"' in tags and "é" in tags


def test_a_request_id_written_twice_is_stored_and_counted_once(store: SqliteStore) -> None:
    assert store.write([make_row("a"), make_row("b")]) == 2
    assert store.write([make_row("a"), make_row("c")]) == 1  # "a" again in a second batch
    assert store.write([make_row("d"), make_row("d", prompt_tokens=999)]) == 1  # twice in one
    assert store.write([make_row("b")]) == 0
    assert raw(store.path, "SELECT request_id, prompt_tokens FROM calls ORDER BY 1") == [
        ("a", 100),
        ("b", 100),
        ("c", 100),
        ("d", 100),  # the first of the two
    ]
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total["calls"] == 4 and total["prompt_tokens"] == 400 and total["cost_nanos"] == 4_000


def test_a_reopened_file_keeps_rows_and_still_counts_each_once(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    first = SqliteStore(path)
    first.write([make_row("a"), make_row("b")])
    first.close()
    second = SqliteStore(path)
    assert second.write([make_row("b"), make_row("c")]) == 1
    assert second.usage("2025-05-01", "2025-05-01")[0]["calls"] == 3
    second.close()


def test_a_batch_that_fails_writes_nothing(store: SqliteStore) -> None:
    store.write([make_row("a")])
    with pytest.raises(OverflowError):  # an integer SQLite cannot hold, in the last row
        store.write([make_row("b"), make_row("c", prompt_tokens=2**70)])
    assert raw(store.path, "SELECT request_id FROM calls") == [("a",)]
    assert store.usage("2025-05-01", "2025-05-01")[0]["calls"] == 1
    assert store.write([make_row("b")]) == 1  # and the store carries on


def random_rows(count: int, seed: int = 7) -> list[LedgerRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        key = rng.randrange(6)
        cost = rng.choice([None, 0, rng.randrange(1, 10**7)])
        fields: dict[str, Any] = {
            "started_at": MAY_1 + rng.uniform(0, 5 * DAY),
            "key_id": f"key-{key}",
            "team": f"team-{key % 3}",
            "model": rng.choice(["default", "fast", "smart", "embed"]),
            "provider": rng.choice(["openai", "anthropic", "ollama"]),
            "prompt_tokens": rng.randrange(5000),
            "completion_tokens": rng.randrange(2000),
            "cached_prompt_tokens": rng.randrange(100),
            "reasoning_tokens": rng.randrange(300),
            "cost_nanos": cost,
            "energy_joules": rng.choice([None, rng.uniform(0, 50)]),
            "code": rng.choice(["OK", "OK", "OK", "UNAVAILABLE", "INVALID_ARGUMENT"]),
            "shared": rng.random() < 0.1,
        }
        rows.append(make_row(f"req-{i}", **{**fields, **cache_fields(rng)}))
    return rows


def cache_fields(rng: random.Random) -> dict[str, Any]:
    """What the response cache did for a random call: often nothing; a hit has no tokens and
    cost 0, and saved a random cost (or an unpriced one) and tokens."""
    cache = rng.choice(["", "", "", "miss", "refresh", "bypass", "hit", "semantic_hit"])
    if cache not in ("hit", "semantic_hit"):
        return {"cache": cache}
    return {
        "cache": cache,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_prompt_tokens": 0,
        "reasoning_tokens": 0,
        "cost_nanos": 0,
        "saved_cost_nanos": rng.choice([None, rng.randrange(1, 10**7)]),
        "saved_tokens": rng.randrange(1, 7000),
    }


def recount(rows: list[LedgerRow]) -> dict[tuple[str, ...], dict[str, float]]:
    """The rollups, summed again in Python from the rows, each row once."""
    totals: dict[tuple[str, ...], dict[str, float]] = collections.defaultdict(
        lambda: dict.fromkeys(SUMS, 0)
    )
    for row in {r.request_id: r for r in reversed(rows)}.values():  # the first of each id
        total = totals[day_of(row.started_at), row.key_id, row.team, row.model, row.provider]
        total["calls"] += 1
        total["errors"] += row.code != "OK"
        total["prompt_tokens"] += row.prompt_tokens
        total["completion_tokens"] += row.completion_tokens
        total["cached_prompt_tokens"] += row.cached_prompt_tokens
        total["reasoning_tokens"] += row.reasoning_tokens
        total["cost_nanos"] += row.cost_nanos or 0
        total["unpriced_calls"] += row.cost_nanos is None
        total["energy_joules"] += row.energy_joules or 0.0
        total["shared_calls"] += row.shared
        total["cache_hits"] += row.cache in ("hit", "semantic_hit")
        total["saved_cost_nanos"] += row.saved_cost_nanos or 0
        total["saved_tokens"] += row.saved_tokens
    return totals


def test_rollups_match_a_recount_of_the_raw_rows(store: SqliteStore) -> None:
    rows = random_rows(2000)
    rng = random.Random(3)
    # Batches of random sizes, some rows sent again (a replayed spool) in later batches.
    sent, i = [], 0
    while i < len(rows):
        size = rng.randrange(1, 300)
        batch = rows[i : i + size] + rng.sample(rows[: i + 1], k=min(i + 1, rng.randrange(20)))
        sent.extend(batch)
        store.write(batch)
        i += size
    expected = recount(sent)
    groups = ("day", "key_id", "team", "model", "provider")
    found = store.usage("2025-05-01", "2025-05-31", group_by=groups)
    assert len(found) == len(expected) > 100
    for total in found:
        want = expected[tuple(str(total[g]) for g in groups)]
        assert {k: total[k] for k in SUMS if k != "energy_joules"} == {
            k: v for k, v in want.items() if k != "energy_joules"
        }
        assert total["energy_joules"] == pytest.approx(want["energy_joules"])
    # and against the raw rows in the file: the same sums, from a GROUP BY over `calls`
    [(calls, cost, unpriced)] = raw(
        store.path,
        "SELECT COUNT(*), SUM(COALESCE(cost_nanos, 0)), SUM(cost_nanos IS NULL) FROM calls",
    )
    [whole] = store.usage("2025-05-01", "2025-05-31")
    assert (whole["calls"], whole["cost_nanos"], whole["unpriced_calls"]) == (
        calls,
        cost,
        unpriced,
    )
    assert calls == len(rows)


def test_unpriced_calls_are_counted_apart_not_as_free(store: SqliteStore) -> None:
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
    costs = dict(raw(store.path, "SELECT request_id, cost_nanos FROM calls"))
    assert costs == {"priced": 5_000, "free": 0, "unpriced-1": None, "unpriced-2": None}


def test_cache_hits_are_counted_with_what_they_saved_and_nothing_twice(
    store: SqliteStore,
) -> None:
    hit = {"prompt_tokens": 0, "completion_tokens": 0, "cached_prompt_tokens": 0}
    store.write(
        [
            make_row(
                "miss", cache="miss", cost_nanos=8_000, prompt_tokens=70, completion_tokens=10
            ),
            make_row(
                "hit", cache="hit", cost_nanos=0, saved_cost_nanos=8_000, saved_tokens=80, **hit
            ),
            make_row(
                "near",
                cache="semantic_hit",
                cost_nanos=0,
                saved_cost_nanos=None,
                saved_tokens=5,
                **hit,
            ),
            make_row("bypass", cache="bypass", cost_nanos=1_000),
            make_row("plain", cost_nanos=1_000),  # the cache not used
        ]
    )
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total["calls"] == 5 and total["cache_hits"] == 2
    assert total["cost_nanos"] == 10_000  # the miss's cost once; the hits cost nothing
    assert total["prompt_tokens"] == 70 + 100 + 100  # the hits' tokens are the miss's
    assert total["saved_cost_nanos"] == 8_000  # the unpriced saving adds nothing
    assert total["saved_tokens"] == 85
    assert total["unpriced_calls"] == 0  # a hit costs 0: free, not unpriced
    assert raw(
        store.path,
        "SELECT request_id, cache, cost_nanos, saved_cost_nanos, saved_tokens FROM calls "
        "ORDER BY 1",
    ) == [
        ("bypass", "bypass", 1_000, None, 0),
        ("hit", "hit", 0, 8_000, 80),
        ("miss", "miss", 8_000, None, 0),
        ("near", "semantic_hit", 0, None, 5),
        ("plain", "", 1_000, None, 0),
    ]
    [other_day] = store.usage("2025-06-01", "2025-06-01")
    assert (other_day["cache_hits"], other_day["saved_cost_nanos"]) == (0, 0)


# The schema of the version before the response cache (schema version 1), as it made files.
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE calls (
    request_id TEXT PRIMARY KEY, started_at REAL NOT NULL, day TEXT NOT NULL,
    duration_ms REAL NOT NULL, ttft_ms REAL, door TEXT NOT NULL, method TEXT NOT NULL,
    key_id TEXT NOT NULL, team TEXT NOT NULL, tags TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT NOT NULL, upstream_model TEXT NOT NULL, attempts INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER, currency TEXT NOT NULL, energy_joules REAL, code TEXT NOT NULL,
    reason TEXT NOT NULL, shared INTEGER NOT NULL
);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE TABLE rollups (
    day TEXT NOT NULL, key_id TEXT NOT NULL, team TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT NOT NULL, calls INTEGER NOT NULL, errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL, unpriced_calls INTEGER NOT NULL, energy_joules REAL NOT NULL,
    shared_calls INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, team, model, provider)
) WITHOUT ROWID;
PRAGMA user_version=1;
"""
# A row and its rollup as the previous version wrote them.
OLD_CALL = (
    "INSERT INTO calls VALUES ('old', 1746061200.0, '2025-05-01', 100.0, NULL, 'grpc', "
    "'Complete', 'k1', 'search', '{}', 'default', 'openai', 'gpt-4o-mini', 1, 100, 20, 10, 5, "
    "1000, 'USD', 2.5, 'OK', '', 0)"
)
OLD_ROLLUP = (
    "INSERT INTO rollups VALUES ('2025-05-01', 'k1', 'search', 'default', 'openai', 1, 0, 100, "
    "20, 10, 5, 1000, 0, 2.5, 0)"
)


def test_a_file_of_the_previous_schema_opens_and_takes_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as old:
        old.executescript(SCHEMA_V1)
        old.execute(OLD_CALL)
        old.execute(OLD_ROLLUP)
    old.close()
    store = SqliteStore(path, currency="USD")
    assert raw(path, "PRAGMA user_version") == [(2,)]
    # The file now has a new file's columns, in the same order, and its old row their defaults.
    fresh = SqliteStore(tmp_path / "fresh.db")
    fresh.close()
    for table in ("calls", "rollups"):
        query = f"SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{table}')"
        assert raw(path, query) == raw(tmp_path / "fresh.db", query)
    assert raw(path, "SELECT cache, saved_cost_nanos, saved_tokens FROM calls") == [("", None, 0)]
    [before] = store.usage("2025-05-01", "2025-05-01")
    assert (before["calls"], before["cache_hits"], before["saved_tokens"]) == (1, 0, 0)
    assert store.write([make_row("old"), make_row("new"), make_row("hit", **HIT)]) == 2
    [after] = store.usage("2025-05-01", "2025-05-01")
    assert after["calls"] == 3 and after["cost_nanos"] == 2_000
    assert (after["cache_hits"], after["saved_cost_nanos"], after["saved_tokens"]) == (
        1,
        1_000,
        120,
    )
    store.close()
    again = SqliteStore(path, currency="USD")  # opening it again changes nothing
    assert again.usage("2025-05-01", "2025-05-01") == [after]
    again.close()


# A cache hit's row, as make_row's fields: no tokens, cost 0, what it saved.
HIT: dict[str, Any] = {
    "cache": "hit",
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cached_prompt_tokens": 0,
    "reasoning_tokens": 0,
    "cost_nanos": 0,
    "saved_cost_nanos": 1_000,
    "saved_tokens": 120,
}


def test_usage_filters_and_groups(store: SqliteStore) -> None:
    day = [MAY_1 + n * DAY + 60 for n in range(3)]  # May 1, 2, 3
    store.write(
        [
            make_row("1", started_at=day[0], key_id="k1", team="a", model="m1", provider="p1"),
            make_row("2", started_at=day[0], key_id="k2", team="b", model="m1", provider="p2"),
            make_row("3", started_at=day[1], key_id="k1", team="a", model="m2", provider="p1"),
            make_row("4", started_at=day[2], key_id="k2", team="b", model="m2", provider="p1"),
            make_row("5", started_at=day[2], key_id="k1", team="a", model="m1", code="INTERNAL"),
        ]
    )

    def calls(**question: Any) -> list[tuple[Any, ...]]:
        return [
            (*(t[g] for g in question.get("group_by", ())), t["calls"], t["errors"])
            for t in store.usage(question.pop("start", "2025-05-01"), "2025-05-03", **question)
        ]

    assert calls() == [(5, 1)]
    assert calls(start="2025-05-02") == [(3, 1)]  # both ends included
    assert calls(group_by=["day"]) == [
        ("2025-05-01", 2, 0),
        ("2025-05-02", 1, 0),
        ("2025-05-03", 2, 1),
    ]
    assert calls(group_by=["key_id", "model"]) == [
        ("k1", "m1", 2, 1),
        ("k1", "m2", 1, 0),
        ("k2", "m1", 1, 0),
        ("k2", "m2", 1, 0),
    ]
    assert calls(key_id="k2", group_by=["day"]) == [("2025-05-01", 1, 0), ("2025-05-03", 1, 0)]
    assert calls(team="a", model="m1") == [(2, 1)]
    assert calls(provider="p2", group_by=["key_id"]) == [("k2", 1, 0)]
    assert calls(key_id="nobody", group_by=["day"]) == []
    assert calls(key_id="nobody") == [(0, 0)]  # the totals of nothing
    assert store.usage("2025-06-01", "2025-06-30")[0]["energy_joules"] == 0.0
    with pytest.raises(ValueError, match="cannot group"):
        store.usage("2025-05-01", "2025-05-03", group_by=["request_id"])
    with pytest.raises(ValueError):
        store.usage("May 1", "2025-05-03")


def test_prune_deletes_old_raw_rows_and_keeps_the_rollups(tmp_path: Path) -> None:
    now = MAY_1 + 30 * DAY
    store = SqliteStore(tmp_path / "usage.db", retention_days=7, clock=lambda: now)
    store.write(
        [
            make_row("old", started_at=now - 10 * DAY),
            make_row("edge", started_at=now - 7 * DAY + 1),
            make_row("new", started_at=now - DAY),
        ]
    )
    assert store.prune(now) == 1
    assert store.prune(now) == 0
    assert raw(store.path, "SELECT request_id FROM calls ORDER BY 1") == [("edge",), ("new",)]
    [total] = store.usage("2025-05-01", "2025-06-30")
    assert total["calls"] == 3  # the rollups still count the pruned row
    store.close()


def test_no_retention_keeps_every_raw_row(store: SqliteStore) -> None:
    store.write([make_row("ancient", started_at=1.0)])
    assert store.prune(MAY_1) == 0
    assert raw(store.path, "SELECT day FROM calls") == [("1970-01-01",)]


def test_writes_prune_by_themselves_at_most_hourly(tmp_path: Path) -> None:
    clock = [MAY_1 + 30 * DAY]
    store = SqliteStore(tmp_path / "usage.db", retention_days=1, clock=lambda: clock[0])
    store.write([make_row("old", started_at=clock[0] - 2 * DAY)])
    clock[0] += 60  # a minute later: not yet
    store.write([make_row("new", started_at=clock[0])])
    assert len(raw(store.path, "SELECT * FROM calls")) == 2
    clock[0] += 3600
    store.write([make_row("newer", started_at=clock[0])])
    assert raw(store.path, "SELECT request_id FROM calls ORDER BY 1") == [("new",), ("newer",)]
    store.close()


def test_opening_prunes_what_is_past_retention(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    kept = SqliteStore(path)
    kept.write([make_row("old", started_at=MAY_1), make_row("older", started_at=MAY_1 - DAY)])
    kept.close()
    SqliteStore(path, retention_days=1, clock=lambda: MAY_1 + 3 * DAY).close()
    assert raw(path, "SELECT COUNT(*) FROM calls") == [(0,)]


def test_processes_opening_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """The workers of `serve --workers` open one ledger file together: SQLite answers
    "database is locked" to all but one for the switch to WAL and the schema, whatever the busy
    timeout; each open waits its turn instead of failing."""
    import multiprocessing

    path = tmp_path / "usage.db"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(6) as pool:
        start = manager.Event()
        opened = [pool.apply_async(_open_when_told, (str(path), start)) for _ in range(6)]
        time.sleep(0.5)  # every one waiting at the start line
        start.set()
        results = [r.get(timeout=60) for r in opened]
    assert results == ["opened"] * 6, results


def _open_when_told(path: str, start: object) -> str:
    start.wait()  # type: ignore[attr-defined]
    try:
        SqliteStore(path, currency="USD").close()
    except Exception as exc:  # reported, not raised: the parent compares the results
        return f"{type(exc).__name__}: {exc}"
    return "opened"
