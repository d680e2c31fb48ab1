"""The supervisor of `hapaxd serve --workers N`: the parent process, which never builds a grpc
object (grpc and fork do not mix; workers are started with exec, not fork).

- **Ports.** It binds the gRPC port (and the HTTP door's) itself, with SO_REUSEPORT and without
  listening, before any worker starts: a port taken by another program fails here, with the
  usual one line; port 0 is resolved once, so every worker binds the same port. The workers bind
  and listen on it too (SO_REUSEPORT), and the kernel spreads new connections over them.
- **Workers.** N processes of `hapaxd worker` (workers/worker.py). Each says when it serves (a
  line on its report pipe) and stops when the supervisor's end of its lifeline pipe closes, so
  no worker outlives a supervisor that was killed. One that dies is restarted after a backoff
  (0.5 s, doubling to 30 s; back to 0.5 s after it ran 30 s), logged and counted
  (`hapax_worker_restarts_total`). If a worker cannot start at all at first (a bad TLS file),
  every worker is stopped and the supervisor exits with that worker's complaint.
- **Signals.** SIGTERM and SIGINT go to every worker, which each turn gRPC health NOT_SERVING
  and drain within `server.grace_period`; workers still running grace + 10 s later are killed.
  SIGHUP: the supervisor reads the config file first; a valid one is sent on as SIGHUP to every
  worker (each reloads the same file), an invalid one is refused for all, logged once here.
- **Metrics.** One endpoint on `metrics.address`: the workers' series summed (metrics_sum.py),
  scraped from each worker's loopback side port on every scrape and every SCRAPE_EVERY seconds.

No grpc; asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from hapaxd import config
from hapaxd.config import Settings
from hapaxd.observability.side_port import MetricsServer
from hapaxd.workers.metrics_sum import MetricsSum

log = logging.getLogger("hapaxd.workers")

READY_WITHIN = 60.0  # seconds a worker has to start serving
SCRAPE_EVERY = 5.0  # seconds between scrapes of the workers' metrics
SCRAPE_TIMEOUT = 2.0
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 30.0
KILL_AFTER = 10.0  # seconds past the grace period before a worker that has not stopped is killed


class WorkerFailed(Exception):
    """A worker exited or stayed silent before it served."""


def hold(address: str) -> tuple[socket.socket, str]:
    """Bind `address` with SO_REUSEPORT, without listening: the port is the workers' from now
    on. The socket, and the address with its port resolved (port 0 becomes the one bound)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    return sock, (f"[{host}]" if family == socket.AF_INET6 else host) + f":{bound}"


class Worker:
    """One worker process and what the supervisor knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_port = 0
        self.started_at = 0.0
        self.failures = 0  # restarts in a row without running STABLE_AFTER seconds
        self.lifeline = -1  # our end of its lifeline pipe

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                assert self.process is not None
                self.process.send_signal(sig)

    def release(self) -> None:
        if self.lifeline >= 0:
            os.close(self.lifeline)
            self.lifeline = -1


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        path: str,
        count: int,
        *,
        command: Callable[[], list[str]] | None = None,
    ) -> None:
        """`command`: how to run `hapaxd` (default this Python with -m hapaxd)."""
        self.settings = settings
        self.path = path
        self.count = count
        self._command = command or (lambda: [sys.executable, "-m", "hapaxd"])
        self.workers = [Worker(i) for i in range(count)]
        self.sum = MetricsSum()
        self.registry = CollectorRegistry()
        self.registry.register(self.sum)
        self.restarts = Counter(
            "hapax_worker_restarts",
            "Worker processes the supervisor restarted after they exited unasked.",
            registry=self.registry,
        )
        self.live = Gauge("hapax_workers", "Worker processes serving now.", registry=self.registry)
        self._stopping = asyncio.Event()
        self._holders: list[socket.socket] = []
        self.grpc_address = ""
        self.http_address = ""
        self._metrics: MetricsServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the whole run ------------------------------------------------------------------------

    async def run(self) -> str | None:
        """Serve until SIGTERM or SIGINT; the one line to print when the gateway cannot start."""
        settings = self.settings
        try:
            sock, self.grpc_address = hold(settings.server.address)
            self._holders.append(sock)
            if settings.openai_http.enabled:
                sock, self.http_address = hold(settings.openai_http.address)
                self._holders.append(sock)
        except OSError as exc:
            self._release_ports()
            return f"cannot listen: {exc.strerror or exc}"
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._later(self.reload()))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))
        try:
            try:  # the first alone (it makes the ledger's file and schema), then the rest
                await self._start(self.workers[0])
                await asyncio.gather(*(self._start(w) for w in self.workers[1:]))
            except WorkerFailed as exc:
                return str(exc)
            if settings.metrics.enabled:
                self._metrics = MetricsServer(
                    settings.metrics, self.registry, ready=self._ready, before_scrape=self.scrape
                )
                await self._metrics.start()
            log.info(
                "serving on %s with %d worker processes (pids %s)",
                self.grpc_address,
                self.count,
                ", ".join(str(w.pid) for w in self.workers),
            )
            for worker in self.workers:
                self._later(self._watch(worker))
            self._later(self._scraping())
            await self._stopping.wait()
            return None
        finally:
            await self._stop_all()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _serving(self) -> list[Worker]:
        return [w for w in self.workers if w.alive and w.metrics_port]

    def _ready(self) -> bool:
        return bool(self._serving())

    def _count_serving(self) -> None:
        self.live.set(len(self._serving()))

    # --- workers ------------------------------------------------------------------------------

    async def _start(self, worker: Worker) -> None:
        """Start `worker`'s process and wait until it serves (WorkerFailed if it does not)."""
        report_read, report_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        args = [
            *self._command(),
            "worker",
            "--index",
            str(worker.index),
            "--grpc-address",
            self.grpc_address,
            "--http-address",
            self.http_address,
            "--report-fd",
            str(report_write),
            "--lifeline-fd",
            str(lifeline_read),
            *(["--config", self.path] if self.path else []),
        ]
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *args, pass_fds=(report_write, lifeline_read), stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            os.close(report_write)
            os.close(lifeline_read)
        worker.release()
        worker.lifeline = lifeline_write
        worker.started_at = time.monotonic()
        worker.metrics_port = 0
        try:
            line = await asyncio.wait_for(_read_line(report_read), READY_WITHIN)
        except TimeoutError:
            worker.signal(signal.SIGKILL)
            raise WorkerFailed(
                f"worker {worker.index} did not serve within {READY_WITHIN:g}s"
            ) from None
        if not line:
            code = await worker.process.wait()
            raise WorkerFailed(f"worker {worker.index} exited with status {code} as it started")
        worker.metrics_port = int(json.loads(line).get("metrics_port") or 0)
        self._count_serving()
        log.info(
            "worker %d serving (pid %d, metrics on 127.0.0.1:%d)",
            worker.index,
            worker.pid,
            worker.metrics_port,
        )

    async def _watch(self, worker: Worker) -> None:
        """Restart `worker` whenever it exits unasked, with a backoff, until the supervisor
        stops."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            self.sum.retire(worker.pid)
            worker.release()
            self._count_serving()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - worker.started_at
            worker.failures = 1 if ran >= STABLE_AFTER else worker.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.failures - 1))
            self.restarts.inc()
            log.warning(
                "worker %d (pid %d) exited with status %s after %.1fs; restarting it in %gs",
                worker.index,
                worker.pid,
                code,
                ran,
                delay,
            )
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
                try:
                    await self._start(worker)
                    break
                except WorkerFailed as exc:
                    worker.failures += 1
                    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.failures - 1))
                    log.warning("%s; trying again in %gs", exc, delay)

    async def reload(self) -> None:
        """SIGHUP: the file read here first; every worker reloads it, or none does."""
        if not self.path:
            log.warning("SIGHUP: no config file to reload (running on the built-in default)")
            return
        try:
            await asyncio.to_thread(config.load, self.path)
        except config.ConfigError as exc:
            log.error("config reload refused for every worker: %s", exc)
            return
        except OSError as exc:
            log.error("config reload refused for every worker: cannot read %s: %s", self.path, exc)
            return
        for worker in self.workers:
            worker.signal(signal.SIGHUP)
        log.info("config reload: sent to %d workers", sum(w.alive for w in self.workers))

    async def _stop_all(self) -> None:
        """Every worker drains (SIGTERM); the ones left after grace + KILL_AFTER are killed."""
        with contextlib.suppress(Exception):
            await self.scrape()  # their last counts, before they go
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        running = [w.process.wait() for w in self.workers if w.alive and w.process is not None]
        if running:
            log.info(
                "shutting down: %d workers draining for up to %gs",
                len(running),
                self.settings.server.grace_period,
            )
            done = asyncio.gather(*running)
            try:
                await asyncio.wait_for(done, self.settings.server.grace_period + KILL_AFTER)
            except TimeoutError:
                for worker in self.workers:
                    if worker.alive:
                        log.error("worker %d did not stop in time: killed", worker.index)
                        worker.signal(signal.SIGKILL)
                await asyncio.gather(*(w.process.wait() for w in self.workers if w.process))
        for worker in self.workers:
            worker.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._metrics is not None:
            await self._metrics.stop()
        if self._session is not None:
            await self._session.close()
        self._release_ports()

    def _release_ports(self) -> None:
        for sock in self._holders:
            sock.close()
        self._holders.clear()

    # --- metrics ------------------------------------------------------------------------------

    async def scrape(self) -> None:
        """Every serving worker's series, now (one that does not answer keeps its last)."""
        await asyncio.gather(*(self._scrape(w) for w in self.workers if w.alive and w.metrics_port))

    async def _scrape(self, worker: Worker) -> None:
        assert self._session is not None
        pid = worker.pid
        try:
            async with self._session.get(
                f"http://127.0.0.1:{worker.metrics_port}/metrics", headers=self._credentials()
            ) as response:
                text = await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return
        if text is not None and worker.pid == pid and worker.alive:
            self.sum.update(pid, text)

    def _credentials(self) -> dict[str, str]:
        metrics = self.settings.metrics
        token = metrics.bearer_token.get_secret_value()
        if token:
            return {"Authorization": f"Bearer {token}"}
        password = metrics.basic_auth_password.get_secret_value()
        if metrics.basic_auth_user or password:
            auth = aiohttp.BasicAuth(metrics.basic_auth_user, password)
            return {"Authorization": auth.encode()}
        return {}

    async def _scraping(self) -> None:
        while True:
            await asyncio.sleep(SCRAPE_EVERY)
            await self.scrape()


async def _read_line(fd: int) -> bytes:
    """One line from the pipe `fd` (b"" at EOF); the pipe is closed after."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        return await reader.readline()
    finally:
        transport.close()
