"""Ledger: rows recorded on the loop reach the store in batches bounded in size and time, from a
worker thread; what the store cannot take waits in the spool file, in order, across a restart;
past the spool's bound rows are dropped and counted; and recording never waits for the store.

A fake store (the storage backend's test double: it can fail, and be slow) and one real
SqliteStore; the spool is a real file under tmp_path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from hapaxd.ledger import Ledger, LedgerRow, SqliteStore
from tests.ledger.test_sqlite_store import make_row


class FakeStore:
    """Keeps rows in memory, one per request id; raises while `failing`; each write takes
    `delay` seconds (in the worker thread it is called from)."""

    def __init__(self) -> None:
        self.failing = False
        self.delay = 0.0
        self.batches: list[list[str]] = []  # request ids of each accepted batch
        self.attempts = 0
        self.ids: list[str] = []  # every stored id, in the order stored
        self.threads: set[int] = set()
        self.closed = False
        self.poison: set[str] = set()  # request ids of rows it can never take

    def write(self, rows: Sequence[LedgerRow]) -> int:
        self.attempts += 1
        self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.failing:
            raise OSError("disk full")
        if any(r.request_id in self.poison for r in rows):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        self.batches.append([r.request_id for r in rows])
        new = [r.request_id for r in rows if r.request_id not in self.ids]
        self.ids.extend(dict.fromkeys(new))
        return len(set(new))

    def unavailable(self, error: BaseException) -> bool:
        return isinstance(error, OSError)

    def usage(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self.closed = True


def rows(count: int, prefix: str = "r") -> list[LedgerRow]:
    return [make_row(f"{prefix}-{i:04d}") for i in range(count)]


def ids(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def spool_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_row_round_trips_through_its_json_line() -> None:
    for row in (
        make_row(),
        make_row(
            "x\ny",
            ttft_ms=12.25,
            tags={"a": 'b\n"c"', "é": "✓"},
            cost_nanos=None,
            energy_joules=None,
            shared=True,
            started_at=1_746_057_600.123456789,
        ),
        make_row(tags={}, duration_ms=3),
    ):
        line = row.to_json()
        assert "\n" not in line
        back = LedgerRow.from_json(line)
        assert back == row and dict(back.tags) == dict(row.tags)
        assert type(back.duration_ms) is float and back.cost_nanos == row.cost_nanos
    with pytest.raises(ValueError):
        LedgerRow.from_json('{"request_id": "cut sho')
    with pytest.raises(ValueError):
        LedgerRow.from_json('{"request_id": "a"}')


async def test_a_full_batch_is_written_at_once_and_a_partial_one_after_the_interval(
    tmp_path: Path,
) -> None:
    store = FakeStore()
    ledger = Ledger(store, spool_path=tmp_path / "spool", batch_size=10, flush_interval=0.3)
    ledger.start()
    await asyncio.sleep(0.01)  # the flusher's first (empty) round
    began = time.monotonic()
    for row in rows(10):
        ledger.record(row)
    await until(lambda: len(store.batches) == 1, within=0.2)  # long before the interval
    assert store.batches == [ids(10)]
    for row in rows(3, "late"):
        ledger.record(row)
    await asyncio.sleep(0.1)
    assert len(store.batches) == 1 and ledger.queued == 3  # not a batch yet: waits
    await until(lambda: len(store.batches) == 2, within=1.0)
    assert time.monotonic() - began >= 0.25
    assert store.batches[1] == ids(3, "late")
    assert store.threads and threading.get_ident() not in store.threads
    await ledger.aclose()
    assert ledger.written_total == 13 and store.closed


async def test_batches_never_pass_the_batch_size(tmp_path: Path) -> None:
    store = FakeStore()
    written: list[int] = []
    ledger = Ledger(store, spool_path=tmp_path / "spool", batch_size=10, on_written=written.append)
    for row in rows(25):
        ledger.record(row)
    await ledger.flush()
    assert [len(b) for b in store.batches] == [10, 10, 5]
    assert store.ids == ids(25) and written == [10, 10, 5]
    assert ledger.queued == 0


async def test_a_failing_store_spools_rows_and_gets_them_in_order_when_it_recovers(
    tmp_path: Path,
) -> None:
    store = FakeStore()
    store.failing = True
    spool = tmp_path / "usage.db.spool"
    ledger = Ledger(store, spool_path=spool, batch_size=4, flush_interval=0.02, retry_interval=0.2)
    ledger.start()
    for burst in range(3):
        for row in rows(10, f"b{burst}"):
            ledger.record(row)
        await asyncio.sleep(0.05)
    recorded = ids(10, "b0") + ids(10, "b1") + ids(10, "b2")
    await until(lambda: ledger.queued == 0 and len(spool_lines(spool)) == 30)
    assert store.ids == [] and store.attempts >= 1
    assert [LedgerRow.from_json(line).request_id for line in spool_lines(spool)] == recorded
    assert ledger.spooled_rows == 30
    attempts = store.attempts
    await until(lambda: store.attempts > attempts)  # a retry, refused
    began = time.monotonic()

    store.failing = False  # recovered, but the next retry is not due yet
    for row in rows(5, "after"):  # more than a batch: the flusher wakes, and must wait
        ledger.record(row)
    await asyncio.sleep(0.05)
    assert store.ids == [] and ledger.queued == 0  # behind the spool, not ahead of it
    await until(lambda: len(store.ids) == 35)
    assert time.monotonic() - began >= 0.15  # retried after retry_interval, not at once
    assert store.ids == [*recorded, *ids(5, "after")]  # in the order recorded
    assert all(len(b) <= 4 for b in store.batches)
    assert spool.stat().st_size == 0 and ledger.spooled_rows == 0
    assert (ledger.written_total, ledger.dropped_total) == (35, 0)
    await ledger.aclose()


async def test_the_spool_is_replayed_by_the_next_ledger_at_start(tmp_path: Path) -> None:
    spool = tmp_path / "usage.db.spool"
    down = FakeStore()
    down.failing = True
    first = Ledger(down, spool_path=spool, batch_size=5)
    for row in rows(12):
        first.record(row)
    await first.aclose(timeout=1)  # the store refuses: everything stays in the spool
    assert len(spool_lines(spool)) == 12 and first.dropped_total == 0
    with spool.open("ab") as handle:  # a line a crash cut short
        handle.write(b'{"request_id": "torn", "started_')

    store = FakeStore()
    second = Ledger(store, spool_path=spool, batch_size=5, flush_interval=30)
    assert second.spooled_rows == 13
    second.start()  # replays at once, not after flush_interval
    await until(lambda: len(store.ids) == 12)
    assert store.ids == ids(12)
    second.record(make_row("next"))
    await second.aclose()
    assert store.ids == [*ids(12), "next"]
    assert spool.stat().st_size == 0


async def test_rows_written_again_by_a_replay_are_counted_once(tmp_path: Path) -> None:
    """A crash after the store took rows but before the spool was emptied: the next start
    writes them again, and the store keeps and counts each once."""
    spool = tmp_path / "usage.db.spool"
    store = SqliteStore(tmp_path / "usage.db")
    store.write(rows(3))
    spool.write_text("".join(row.to_json() + "\n" for row in rows(5)))
    written: list[int] = []
    ledger = Ledger(store, spool_path=spool, on_written=written.append)
    ledger.start()
    await until(lambda: sum(written) == 2)
    [total] = store.usage("2025-05-01", "2025-05-01")
    assert total["calls"] == 5
    await ledger.aclose()
    assert ledger.written_total == 2


async def test_a_full_queue_overflows_to_the_spool_and_nothing_is_lost(tmp_path: Path) -> None:
    store = FakeStore()
    ledger = Ledger(store, spool_path=tmp_path / "spool", queue_limit=5, batch_size=100)
    for row in rows(8):
        ledger.record(row)
    assert (ledger.queued, ledger.spooled_rows) == (5, 3)
    await ledger.flush()
    assert sorted(store.ids) == ids(8)
    assert ledger.spooled_rows == 0 and ledger.dropped_total == 0


async def test_past_the_spool_bound_rows_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(make_row("r-0000").to_json()) + 1
    dropped: list[int] = []
    ledger = Ledger(
        FakeStore(),
        spool_path=tmp_path / "spool",
        queue_limit=5,
        spool_limit_bytes=3 * line,
        on_dropped=dropped.append,
    )
    with caplog.at_level(logging.WARNING, logger="hapaxd.ledger"):
        for row in rows(12):
            ledger.record(row)
    assert (ledger.queued, ledger.spooled_rows) == (5, 3)
    assert dropped == [1, 1, 1, 1] and ledger.dropped_total == 4
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


async def test_a_failed_batch_larger_than_the_spool_room_drops_the_rest(tmp_path: Path) -> None:
    line = len(make_row("r-0000").to_json()) + 1
    store = FakeStore()
    store.failing = True
    dropped: list[int] = []
    ledger = Ledger(
        store, spool_path=tmp_path / "spool", spool_limit_bytes=3 * line, on_dropped=dropped.append
    )
    for row in rows(5):
        ledger.record(row)
    await ledger.flush()
    assert dropped == [2] and ledger.spooled_rows == 3
    store.failing = False
    await ledger.flush()
    assert store.ids == ids(3)  # the first three, kept in order


async def test_aclose_writes_everything_queued_and_spooled(tmp_path: Path) -> None:
    store = FakeStore()
    ledger = Ledger(store, spool_path=tmp_path / "spool", batch_size=10, flush_interval=30)
    ledger.start()
    await asyncio.sleep(0.01)
    store.failing = True
    for row in rows(10, "early"):
        ledger.record(row)
    await until(lambda: ledger.spooled_rows == 10)
    store.failing = False
    for row in rows(25):
        ledger.record(row)
    await ledger.aclose()
    assert store.ids[:10] == ids(10, "early") and sorted(store.ids[10:]) == ids(25)
    assert ledger.queued == 0 and ledger.spooled_rows == 0 and store.closed


async def test_aclose_out_of_time_leaves_the_rest_in_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    slow = FakeStore()
    slow.delay = 0.5
    ledger = Ledger(slow, spool_path=spool, batch_size=10, flush_interval=30)
    for row in rows(25):
        ledger.record(row)
    began = time.monotonic()
    await ledger.aclose(timeout=0.1)
    assert time.monotonic() - began < 0.4
    assert not slow.closed
    # The batch being written when time ran out is spooled too (the store may yet take it).
    assert sorted(LedgerRow.from_json(x).request_id for x in spool_lines(spool)) == ids(25)

    store = FakeStore()
    again = Ledger(store, spool_path=spool)
    await again.aclose()
    assert sorted(store.ids) == ids(25) and spool.stat().st_size == 0


async def test_record_never_waits_for_the_store(tmp_path: Path) -> None:
    slow = FakeStore()
    slow.delay = 1.0
    ledger = Ledger(slow, spool_path=tmp_path / "spool", batch_size=100, flush_interval=0.01)
    ledger.start()
    for row in rows(100):
        ledger.record(row)
    await until(lambda: slow.attempts == 1)  # the store is now busy for a second
    slow.delay = 0.0  # for the writes after this one
    for row in rows(2000, "more"):
        ledger.record(row)
    await asyncio.sleep(0.05)  # the loop runs on while the store writes
    # every row was taken while the first batch is still being written: record never waited
    assert slow.ids == [] and ledger.queued == 2000
    await ledger.aclose()
    assert slow.ids == ids(100) + ids(2000, "more")


async def test_a_row_the_store_can_never_take_is_dropped_alone(tmp_path: Path) -> None:
    """Not retried for ever from the spool (holding up every later row): the batch is written
    row by row, the bad one dropped, counted and logged, the others stored."""
    store, dropped = FakeStore(), []
    store.poison = {"r-0003"}
    ledger = Ledger(
        store, spool_path=tmp_path / "spool", flush_interval=0.01, on_dropped=dropped.append
    )
    ledger.start()
    for row in rows(6):
        ledger.record(row)
    await ledger.aclose()
    assert store.ids == [i for i in ids(6) if i != "r-0003"]
    assert sum(dropped) == 1 and ledger.dropped_total == 1
    assert spool_lines(tmp_path / "spool") == []


def test_sqlite_tells_a_bad_row_from_a_database_that_cannot_take_rows(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path / "usage.db")
    try:
        assert store.unavailable(sqlite3.OperationalError("database is locked"))
        assert store.unavailable(OSError(28, "No space left on device"))
        assert not store.unavailable(sqlite3.IntegrityError("NOT NULL constraint failed"))
        assert not store.unavailable(OverflowError("Python int too large"))
        huge = make_row("huge", prompt_tokens=2**70)
        with pytest.raises(OverflowError) as caught:
            store.write([huge])
        assert not store.unavailable(caught.value)
    finally:
        store.close()
