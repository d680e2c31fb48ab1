"""What every benchmark here shares: servers in their own pinned processes, CPU accounting from
/proc, the event loop choice, and latency statistics.

Process layout (see README): the server under test (gateway or floor) runs in its own process
pinned to the first allowed CPU ("CPU 0"); the load generator (the process running the benchmark)
is pinned to the second ("CPU 1"); the fake upstream runs in a third process, also on CPU 1, so
that every cycle on CPU 0 is the server under test's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPUs -----------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free now (for a server that binds it next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def set_process_affinity(cpus: set[int], pid: int = 0) -> None:
    """Every thread of the process (sched_setaffinity alone moves only the calling thread; grpc
    starts its own threads)."""
    pid = pid or os.getpid()
    for tid in _tasks(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """This process (all its threads) on one CPU for the block; the old affinity after."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    set_process_affinity({cpu})
    try:
        yield
    finally:
        set_process_affinity(before)


def cpu_plan(pin: bool) -> tuple[int | None, int | None]:
    """(server CPU, client CPU): the first two CPUs this process may use, or no pinning when asked
    not to or when fewer than two are available."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU `cpu` spent busy (anything but idle and iowait), from /proc/stat; with the
    server under test's own time taken away, what neighbours took from it."""
    prefix = f"cpu{cpu} ".encode()
    with open("/proc/stat", "rb") as handle:
        for line in handle:
            if line.startswith(prefix):
                ticks = [int(x) for x in line.split()[1:]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                return (sum(ticks[:8]) - idle) / _CLK_TCK
    return math.nan


# --- event loops ----------------------------------------------------------------------------------


def run_loop(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine under uvloop (what `hapaxd serve` uses) or the default asyncio loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    if loop == "asyncio":
        return asyncio.run(main)
    raise ValueError(f"unknown loop {loop!r}; use one of {LOOPS}")


# --- servers in their own processes ---------------------------------------------------------------


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def gateway_settings(upstream_port: int, overrides: dict[str, Any] | None = None) -> Any:
    """One `openai` provider on the fake upstream, auth off and no health checks unless
    `overrides` (merged into the config mapping) turn them on; otherwise the default config, as
    users run it: metrics (the side port on a free port) and the access log at info (a gateway
    process writes its JSON lines as `hapaxd serve` does, to /dev/null)."""
    from hapaxd import config

    data = _merge(
        {
            "providers": [
                {
                    "name": "fake",
                    "type": "openai",
                    "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                    "models": {"default": "fake-model"},
                }
            ],
            "default_model": "default",
            "health_check": {"enabled": False},
            "metrics": {"enabled": True, "address": "127.0.0.1:0"},
            "logging": {"level": "info"},
        },
        overrides or {},
    )
    if "auth" in config.Settings.model_fields:  # a tree from before auth has no such section
        data.setdefault("auth", {"enabled": False})
    if "ledger" in config.Settings.model_fields and not data.get("ledger", {}).get("path"):
        # The usage ledger is on by default: each gateway writes its own file, in a temporary
        # folder, never the user's ~/.local/state.
        ledger = {**data.get("ledger", {}), "path": os.path.join(_state_dir(), "usage.db")}
        data["ledger"] = ledger
    return config.parse(data, {})


def _state_dir() -> str:
    """A temporary folder of this process's own, removed when it exits."""
    import atexit
    import shutil
    import tempfile

    global _STATE
    if _STATE is None:
        _STATE = tempfile.mkdtemp(prefix="hapax-bench-")
        atexit.register(shutil.rmtree, _STATE, True)
    return _STATE


_STATE: str | None = None


async def _serve(
    role: str,
    conn: multiprocessing.connection.Connection,
    upstream_port: int,
    overrides: dict[str, Any] | None,
) -> None:
    close: Callable[[], Awaitable[object]]
    if role == "upstream":
        from benchmarks import fake_upstream

        runner, port = await fake_upstream.start()
        close = runner.cleanup
    elif role == "gateway":
        from hapaxd.app import App

        settings = gateway_settings(upstream_port, overrides)
        _log_as_serve_does(settings)
        app = App(settings, address="127.0.0.1:0")
        await app.start()
        # What `hapaxd serve` does after start; a source tree from before it existed skips it.
        tune = getattr(sys.modules["hapaxd.app"], "tune_garbage_collector", None)
        if tune is not None:
            tune()
        port = app.port
        close = lambda: app.stop(grace=0)  # noqa: E731
    elif role == "floor":
        from benchmarks import floor

        server, port = await floor.start()
        close = lambda: server.stop(0)  # noqa: E731
    else:
        raise ValueError(f"unknown role {role!r}")
    loop = asyncio.get_running_loop()
    hapaxd = sys.modules.get("hapaxd")
    conn.send(
        (
            "ready",
            port,
            {
                "loop": type(loop).__module__ + "." + type(loop).__name__,
                "hapaxd": os.path.dirname(getattr(hapaxd, "__file__", "") or "") or None,
            },
        )
    )
    stopping = asyncio.Event()
    loop.add_reader(conn.fileno(), stopping.set)
    await stopping.wait()
    loop.remove_reader(conn.fileno())
    await close()


def _log_as_serve_does(settings: Any) -> None:
    """Configure logging as `hapaxd serve` does (JSON lines, the access log at info), into
    /dev/null: the lines are formatted and written, as a gateway's are, and go nowhere."""
    try:
        from hapaxd.observability.log_format import configure_logging
    except ImportError:  # a tree from before it: its logs go where Python's defaults send them
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    configure_logging(settings.logging)


def _child(
    role: str,
    conn: multiprocessing.connection.Connection,
    cpu: int | None,
    loop: str,
    upstream_port: int,
    source: str = "",
    overrides: dict[str, Any] | None = None,
) -> None:
    if cpu is not None:
        set_process_affinity({cpu})
    if source:
        sys.path.insert(0, os.path.abspath(source))  # before anything imports hapaxd
    try:
        run_loop(loop, _serve(role, conn, upstream_port, overrides))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}", ""))
        raise


class ServerProcess:
    """A server (role upstream, gateway or floor) in its own spawned process, pinned to `cpu`.
    A gateway may be imported from another source tree (`source`: a directory holding hapaxd/)
    and given config overrides."""

    def __init__(
        self,
        name: str,
        role: str,
        *,
        cpu: int | None,
        loop: str = "uvloop",
        upstream_port: int = 0,
        source: str = "",
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.role, self.cpu, self.loop = name, role, cpu, loop
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_child,
            args=(role, child, cpu, loop, upstream_port, source, overrides),
            name=f"bench-{name}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.port = 0
        self.loop_class = ""
        self.hapaxd_path: str | None = None

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        if not self._conn.poll(timeout):
            self.stop()
            raise RuntimeError(f"{self.name}: not ready within {timeout:g}s")
        try:
            status, value, info = self._conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(
                f"{self.name}: exited before it was ready (exit code {self.process.exitcode})"
            ) from None
        if status != "ready":
            self.stop()
            raise RuntimeError(f"{self.name}: failed to start: {value}")
        self.port, self.loop_class, self.hapaxd_path = value, info["loop"], info["hapaxd"]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._conn.close()


@contextlib.contextmanager
def started(servers: Sequence[ServerProcess]) -> Iterator[None]:
    """Wait for every server to be ready; stop them all on the way out."""
    try:
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.stop()


# --- statistics -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def environment() -> dict[str, Any]:
    import aiohttp
    import grpc

    try:
        import uvloop

        uvloop_version: str | None = getattr(uvloop, "__version__", None)
    except ImportError:
        uvloop_version = None
    return {
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
