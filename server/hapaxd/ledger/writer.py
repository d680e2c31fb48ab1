"""Ledger: takes one row per call from the call path and writes them to a store in batches, from
a worker thread, so a call never waits for the database. Plain asyncio: no grpc, no HTTP,
nothing else of hapaxd.

Where a row can be, in order: the in-memory queue (`record` appends, never blocks, never
raises); a batch being written by the store; the spool file (JSON lines beside the database),
which takes a row when the queue is full, and a batch when the store fails; the store. The
spool is replayed to the store in order, every `retry_interval` while the store fails, and is
truncated only after the store has taken all of it. A crash during a replay writes again rows
the store already has on the next start: harmless, the store keeps one row per request id
(INSERT OR IGNORE) and counts it once. Rows are dropped, counted by `on_dropped` and logged,
only when the spool is past its byte limit (or cannot be written at all).

`kill -9` loses at most what was in memory: at most one flush interval's rows plus the queue
(the rows recorded since the last write, and the batch being written). Rows in the spool file
survive it (they reach the operating system before `record` returns or a failed batch is given
up; a failed batch is also fsynced), and so do rows the store has committed.

Order: rows reach the store in the order recorded, also through a failure and its spool; only
rows that overflowed a full queue into the spool may reach it after rows recorded just before
them. A row carries its start time, so order changes nothing the store holds.

`before_writes` (budgets read their spend from the store at start): work that must see the
store as it was before this run, but with the rows an earlier run left in the spool. Until it
has run, this run's rows go no further than the spool; the earlier run's spool is written first.
When the store cannot be asked (a database down at start), the flusher tries it again before
anything else every `retry_interval`, so it runs before this run's first row reaches the store,
however late.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from hapaxd.ledger.rows import LedgerRow, UsageRow

log = logging.getLogger("hapaxd.ledger")

WARN_EVERY = 10.0  # seconds between two warnings of one kind
READ_CHUNK = 1 << 20


class Store(Protocol):
    """Where the rows go, and usage questions are answered from (sqlite_store.py's SqliteStore
    says what each method does). Blocking: called from worker threads."""

    def write(self, rows: Sequence[LedgerRow]) -> int:
        """Store `rows` all or none (raise); how many were new (not seen before)."""
        ...

    def unavailable(self, error: BaseException) -> bool:
        """Whether `error` from `write` means the store cannot take rows now (locked, down, a
        full disk: the rows wait in the spool) rather than that a row is one it can never
        take (that row is dropped, the others written)."""
        ...

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
    ) -> list[UsageRow]: ...

    def close(self) -> None: ...


class Spool:
    """The spool file: rows as JSON lines, appended by any thread, read back by the flusher from
    `consumed` (bytes already written to the store) on, truncated once the store has all of it.
    Appends take a lock only for the write itself; reading takes none (it reads complete lines
    up to the size appends have reached)."""

    def __init__(self, path: Path, limit_bytes: int) -> None:
        self.path = path
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.size = 0  # bytes of complete lines in the file
        self.consumed = 0  # bytes at the start of the file the store has
        self.rows = 0  # lines in the file (approximate: a torn line counts)
        self.rows_consumed = 0
        if path.exists():
            self._adopt()

    @property
    def pending(self) -> bool:
        return self.size > self.consumed

    def append(self, rows: Iterable[LedgerRow], *, sync: bool) -> int:
        """Append as many of `rows` as fit under the byte limit, in order; how many did (the
        rest, and any JSON cannot hold, are the caller's to count as dropped). The data reaches
        the operating system before this returns; with `sync`, the disk too. OSError if the
        file cannot be written."""
        lines: list[bytes] = []
        room = self.limit_bytes - self.size
        for row in rows:
            try:
                line = row.to_json().encode() + b"\n"
            except (TypeError, ValueError):  # not a row JSON can hold: one of those dropped
                log.exception("usage ledger: cannot spool the row %r", row.request_id)
                continue
            if len(line) > room:
                break
            lines.append(line)
            room -= len(line)
        with self._lock:
            room = self.limit_bytes - self.size  # another thread may have appended meanwhile
            while lines and sum(map(len, lines)) > room:
                lines.pop()
            if not lines:
                return 0
            data = b"".join(lines)
            fd = self._open()
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            self.size += len(data)
            self.rows += len(lines)
        if sync:
            try:
                os.fsync(fd)
            except OSError as error:  # the rows are with the operating system all the same
                log.warning("usage ledger: cannot fsync the spool %s: %s", self.path, error)
        return len(lines)

    def read(self, max_rows: int, end: int) -> tuple[list[LedgerRow], int, int]:
        """Up to `max_rows` rows from `consumed` on, before the offset `end`: (rows, the offset
        after them, lines that were not rows and are skipped)."""
        rows: list[LedgerRow] = []
        bad, offset = 0, self.consumed
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            while offset < end and len(rows) < max_rows:
                line = handle.readline()
                if not line:
                    break
                offset += len(line)
                try:
                    rows.append(LedgerRow.from_json(line))
                except (ValueError, TypeError):
                    bad += 1
        return rows, offset, bad

    def advance(self, offset: int, rows: int) -> bool:
        """The store has the rows up to `offset`; empty the file if that is all of it (True)."""
        with self._lock:
            self.consumed, self.rows_consumed = offset, self.rows_consumed + rows
            if self.consumed < self.size:
                return False
            os.ftruncate(self._open(), 0)
            self.size = self.consumed = self.rows = self.rows_consumed = 0
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _adopt(self) -> None:
        """A spool left by an earlier run: count its lines, and end a line a crash cut short so
        the next row does not join it."""
        last = b"\n"
        with open(self.path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                self.rows += chunk.count(b"\n")
                last = chunk[-1:]
            self.size = handle.tell()
        if last != b"\n":
            os.write(self._open(), b"\n")
            self.size += 1
            self.rows += 1


class Ledger:
    """Rows recorded on the event loop, written to `store` in batches of up to `batch_size` by a
    background task, every `flush_interval` seconds or as soon as a batch is queued. At most
    `queue_limit` rows wait in memory; more go to the spool at `spool_path`, up to
    `spool_limit_bytes`; past that they are dropped, counted by `on_dropped`. `on_written` counts
    the rows the store took as new. The ledger owns the store: `aclose` closes it."""

    def __init__(
        self,
        store: Store,
        *,
        spool_path: str | os.PathLike[str],
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_limit: int = 10_000,
        spool_limit_bytes: int = 64 * 1024 * 1024,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_written: Callable[[int], None] = lambda n: None,
        retry_interval: float = 2.0,
    ) -> None:
        self.store = store  # for usage questions (from a worker thread); rows go by record
        self._spool = Spool(Path(spool_path), spool_limit_bytes)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_limit = queue_limit
        self._retry_interval = retry_interval
        self._on_dropped = on_dropped
        self._on_written = on_written
        self._queue: collections.deque[LedgerRow] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one step at a time: the flusher's, flush()'s or aclose()'s
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False  # the store's last write failed
        self._retry_at = 0.0  # loop time before which the store is not asked again
        self._in_flight: list[LedgerRow] = []  # taken from the queue, not yet stored or spooled
        self._before: Callable[[], Awaitable[object]] | None = None  # see before_writes
        self._earlier = self._spool.size  # bytes of the spool an earlier run left, not written
        self._warned: dict[str, float] = {}
        self._unlogged_drops = 0
        self.written_total = 0
        self.dropped_total = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def spooled_rows(self) -> int:
        """Rows in the spool not yet in the store (approximate)."""
        return max(0, self._spool.rows - self._spool.rows_consumed)

    def start(self) -> None:
        """Start the background flusher on the running loop; its first work is the spool an
        earlier run left."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="hapax-ledger-flusher"
            )

    def record(self, row: LedgerRow) -> None:
        """Queue `row`; when the queue is full, append it to the spool; when that is full too,
        drop it. Never blocks on the store, never raises."""
        try:
            if len(self._queue) < self._queue_limit and not self._closed:
                self._queue.append(row)
                if len(self._queue) >= self._batch_size:
                    self._wake.set()
                return
            spooled = self._spool.append((row,), sync=False)
        except Exception:
            log.exception("usage ledger: could not keep a row")
            spooled = 0
        if not spooled:
            self._dropped(1)

    async def before_writes(self, job: Callable[[], Awaitable[object]]) -> bool:
        """Run `job` (it reads the store) once, after the rows an earlier run left in the spool
        reach the store and before any row recorded by this run does, so what it reads counts
        each earlier row once and none of this run's. Tried now: True once it ran. False when
        the store is unavailable (the spool's replay or `job` raised an error `unavailable`
        recognises): the flusher tries again every `retry_interval` before writing anything,
        rows waiting in the spool meanwhile. Another error of `job` is logged, and rows are
        written without it. Skipped at shutdown: `aclose` writes all."""
        self._before = job
        async with self._lock:
            return await self._run_before()

    async def flush(self) -> None:
        """Write everything queued now (and the spool first, even while waiting to retry it);
        what the store refuses goes to the spool. Never raises for the store's failure."""
        async with self._lock:
            await self._step(retry=True)

    # `timeout` is not the caller's to wrap: when it passes, aclose still spools what is left.
    async def aclose(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop the flusher and write everything queued and spooled, within `timeout` seconds;
        what is not written by then stays in the spool file for the next start. Closes the
        store and the spool."""
        self._closed = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                if self._task is not None:
                    await self._task
                async with self._lock:
                    await self._step(retry=True)
                    await asyncio.to_thread(self.store.close)
        except TimeoutError:
            log.warning(
                "usage ledger: not written within %.1f s at shutdown: %d rows left in %s",
                timeout,
                len(self._in_flight) + len(self._queue) + self.spooled_rows,
                self._spool.path,
            )
        finally:
            # Rows still in memory (the store was failing, or too slow for the timeout): to the
            # spool, here on the loop, as nothing else runs. A batch whose write was cut off may
            # also reach the store: the spool's copy is then ignored on the next start.
            self._dropped(self._save([*self._in_flight, *self._drain()], sync=True))
            self._in_flight = []
            self._spool.close()
            if self._unlogged_drops:  # drops since the last (rate-limited) warning
                log.warning("usage ledger: dropped %d rows", self._unlogged_drops)
                self._unlogged_drops = 0

    async def _run(self) -> None:
        waiting = 0.0  # at once: the spool an earlier run left
        while not self._closed:
            if waiting:
                try:
                    async with asyncio.timeout(waiting):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
            if self._closed:  # aclose writes the rest
                return
            try:
                async with self._lock:
                    due = asyncio.get_running_loop().time() >= self._retry_at
                    await self._step(retry=due)
            except Exception:  # a bug of ours must not end the ledger
                log.exception("usage ledger: the flusher failed; it carries on")
            waiting = self._retry_interval if self._failing else self._flush_interval

    async def _step(self, *, retry: bool) -> None:
        """The spool first (when `retry`: the store is asked only once its retry time came),
        then the rows queued now, in batches. What the store refuses goes to the spool, and
        while the spool holds rows the store refused, newer rows follow them there; so do rows
        recorded while `before_writes`' job waits to run."""
        if self._before is not None and not self._closed:
            if not retry or not await self._run_before():
                await self._to_spool(self._drain())
                return
        if self._spool.pending:
            if not retry or not await self._replay():
                await self._to_spool(self._drain())
                return
        for _ in range(-(-len(self._queue) // self._batch_size)):
            batch = self._drain(self._batch_size)
            if not await self._write(batch):
                await self._to_spool([*batch, *self._drain()])
                return

    async def _run_before(self) -> bool:
        """`before_writes`' job, after the earlier run's spool; False if the store is
        unavailable (then retried)."""
        job = self._before
        if job is None:
            return True
        if self._earlier and not await self._replay(self._earlier):
            return False
        try:
            await job()
        except Exception as error:
            if self.store.unavailable(error):
                self._failed(error)
                return False
            log.exception("usage ledger: the work before the first write failed; writing on")
        self._before = None
        return True

    async def _replay(self, end: int | None = None) -> bool:
        """Write the spool to the store in order, batch by batch, up to the offset `end` (as far
        as it reached when called: rows a full queue adds meanwhile wait for the next step);
        False when the store refused a batch (the rows written before it are not read
        again)."""
        spool = self._spool
        end = spool.size if end is None else end
        while spool.consumed < end:
            rows, offset, bad = await asyncio.to_thread(spool.read, self._batch_size, end)
            if bad:
                log.warning("usage ledger: skipped %d unreadable lines of %s", bad, spool.path)
            if rows and not await self._write(rows, spooled=True):
                return False
            emptied = await asyncio.to_thread(spool.advance, offset, len(rows) + bad)
            if emptied or offset >= self._earlier:  # the earlier run's rows are written
                self._earlier = 0
            if emptied or not (rows or bad):  # all of it, or nothing more to read
                break
        return True

    async def _write(self, rows: list[LedgerRow], *, spooled: bool = False) -> bool:
        """One batch to the store in a worker thread; False (and the retry time set) if the store
        raised. While it runs, a batch from the queue is `_in_flight`, so a shutdown that cannot
        wait for it spools it."""
        if not spooled:
            self._in_flight = rows
        try:
            new = await asyncio.to_thread(self.store.write, rows)
        except Exception as refused:
            error: BaseException = refused
            if not self.store.unavailable(refused):
                try:
                    new = await self._write_each(rows)
                except Exception as down:  # down meanwhile: all to the spool (written ones
                    error = down  # are written once all the same: the request id is the key)
                else:
                    self._in_flight = []
                    self.written_total += new
                    self._call(self._on_written, new)
                    return True
            self._in_flight = []  # the caller spools them
            self._failed(error)
            return False
        # Cancelled (a shutdown out of time): `_in_flight` stays, for aclose to spool.
        self._in_flight = []
        if self._failing:
            self._failing = False
            log.info("usage ledger: the store takes rows again")
        self.written_total += new
        self._call(self._on_written, new)
        return True

    def _failed(self, error: BaseException) -> None:
        """The store refused: ask it again only after `retry_interval`; warn (rate-limited)."""
        self._failing = True
        self._retry_at = asyncio.get_running_loop().time() + self._retry_interval
        self._warn(
            "store",
            "usage ledger: the store failed (%s: %s); rows go to %s, retried every %.1f s",
            type(error).__name__,
            error,
            self._spool.path,
            self._retry_interval,
        )

    async def _write_each(self, rows: list[LedgerRow]) -> int:
        """A batch the store refused for its rows, not for being down: each row alone, so one
        row it can never take (a value out of its range) is dropped, counted and logged, and
        does not hold up the rest (in the spool it would be retried for ever)."""
        new, bad = 0, 0
        for row in rows:
            try:
                new += await asyncio.to_thread(self.store.write, [row])
            except Exception as each:
                if self.store.unavailable(each):
                    raise  # down after all: the caller spools the batch
                bad += 1
                log.error(
                    "usage ledger: dropped the row %s, which the store cannot take: %s: %s",
                    row.request_id,
                    type(each).__name__,
                    each,
                )
        self._dropped(bad)
        return new

    async def _to_spool(self, rows: list[LedgerRow]) -> None:
        """`rows` to the spool from a worker thread (fsynced); those that do not fit are dropped
        and counted."""
        if rows:
            self._in_flight = rows
            dropped = await asyncio.to_thread(self._save, rows, sync=True)
            self._in_flight = []  # cancelled: they stay, for aclose to spool (again: harmless)
            self._dropped(dropped)

    def _save(self, rows: list[LedgerRow], *, sync: bool) -> int:
        """`rows` to the spool; how many did not fit, or all if the file cannot be written."""
        if not rows:
            return 0
        try:
            kept = self._spool.append(rows, sync=sync)
        except OSError as error:
            log.error("usage ledger: cannot write the spool %s: %s", self._spool.path, error)
            kept = 0
        return len(rows) - kept

    def _drain(self, limit: int | None = None) -> list[LedgerRow]:
        count = len(self._queue) if limit is None else min(limit, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    def _dropped(self, count: int) -> None:
        """Count `count` rows dropped; warn at most every WARN_EVERY seconds with the count since
        the last warning."""
        if not count:
            return
        self.dropped_total += count
        self._call(self._on_dropped, count)
        self._unlogged_drops += count
        if self._warn(
            "dropped",
            "usage ledger: dropped %d rows: the spool %s is full (%d bytes)",
            self._unlogged_drops,
            self._spool.path,
            self._spool.limit_bytes,
        ):
            self._unlogged_drops = 0

    def _warn(self, kind: str, message: str, *args: object) -> bool:
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) < WARN_EVERY:
            return False
        self._warned[kind] = now
        log.warning(message, *args)
        return True

    @staticmethod
    def _call(callback: Callable[[int], None], count: int) -> None:
        try:
            callback(count)
        except Exception:
            log.exception("usage ledger: a counter callback failed")
