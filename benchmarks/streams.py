"""Many open StreamComplete streams against an upstream that is slow to answer: does the gateway
hold them, at what memory, and do other calls still answer meanwhile?

The gateway (its own process, pinned like the other benchmarks) serves one `local` provider whose
`chunk_delay` makes every stream wait that long for its first word; each stream asks for one word
(`max_tokens` 1), so it gets its first message after the delay and then ends. Client processes hold
the streams, spread over many connections; this process sends plain `Complete` calls on a
connection of its own at a steady rate, on the idle gateway first and then while the streams are
open, and reads the gateway's resident memory from /proc.

A stream counts as held when the gateway says so: this process reads the gateway's own
`hapax_grpc_active_requests{method="StreamComplete"}` gauge (calls its handler is running) and
`hapax_grpc_requests_total{method="StreamComplete"}` (calls it finished) from the metrics side
port every `gauge_interval` seconds. Nothing the client sees can say it: the gateway sends its
response headers with the first message, which for a slow model is the whole wait.

    python -m benchmarks.streams [--streams 10000] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.harness import (
    LOOPS,
    ServerProcess,
    cpu_plan,
    environment,
    free_port,
    percentile,
    pinned,
    process_cpu_seconds,
    run_loop,
    set_process_affinity,
    started,
)
from benchmarks.report import empty_figures
from benchmarks.report import figure as _f

AIM_RSS_BYTES = 1 << 30  # 10,000 streams in under 1 GiB
AIM_PROBE_RATIO = 2.0  # calls meanwhile: p50 and p99 within 2x the idle gateway's, none failed
STREAMS_PER_CONNECTION = 500  # under the server's max_concurrent_streams (1000 by default)
SLOW_PROBE = 0.05  # seconds: a probe call this slow was held up, not merely busy
PHASES = ("idle", "opening", "holding", "answering", "after")
HELD_GAUGE = "hapax_grpc_active_requests"  # the gateway's calls in progress, by method
FINISHED_COUNTER = "hapax_grpc_requests_total"  # the gateway's calls ended, by method and code
STREAM_METHOD = 'method="StreamComplete"'
# The figures the aims rest on: a run whose measurement came back empty (benchmarks/report.py)
# says so instead of judging an aim on nothing. `+`: more than zero.
FIGURES = (
    "streams.taken+",
    "streams.peak_held+",
    "streams.with_first_message+",
    "streams.opening_seconds",
    "rss.before_bytes+",
    "rss.plateau_bytes+",
    "rss.held_at_plateau+",
    "rss.per_stream_bytes",
    "gauge.samples+",
    "probes.idle.answered+",
    "probes.idle.p50_ms",
    "probes.idle.p99_ms",
    "probes.holding.answered+",
    "probes.holding.p50_ms",
    "probes.holding.p99_ms",
    "probe_ratio_holding_vs_idle.p50",
    "probe_ratio_holding_vs_idle.p99",
)
_clock = time.monotonic  # one clock for every process on the machine (CLOCK_MONOTONIC)


@dataclasses.dataclass
class Config:
    streams: int = 10_000
    chunk_delay: float = 30.0  # seconds the upstream takes to answer each stream
    connections: int | None = None  # default: one per STREAMS_PER_CONNECTION streams
    clients: int = 2  # processes holding the streams
    window: int = 400  # streams started but not yet taken by the gateway, over all clients
    gauge_interval: float = 0.1  # seconds between reads of the gateway's metrics
    probe_rate: float = 50.0  # Complete calls per second on their own connection
    probe_timeout: float = 5.0
    warmup: float = 1.0  # seconds of probes before the idle ones, not counted
    idle: float = 8.0  # seconds of probes on the idle gateway
    settle: float = 3.0  # seconds after the last stream ended before the "after" RSS
    loop: str = "uvloop"
    pin: bool = True
    source: str = ""  # a directory holding hapaxd/ (default: this tree's server/)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def quick(cls) -> Config:
        return cls(streams=2000, chunk_delay=8.0, idle=3.0, settle=1.0)

    def connection_count(self) -> int:
        wanted = self.connections or math.ceil(self.streams / STREAMS_PER_CONNECTION)
        return max(self.clients, min(wanted, self.streams))


# --- the clients holding the streams (each its own process) ---------------------------------------

# Per client, in the shared counter array: streams started, with a first message, ended (any
# outcome), failed without a message.
STARTED, FIRST, ENDED, FAILED = range(4)
Record = tuple[float, float, float, int, str, str]  # start, first, end, messages, code, detail


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _client(
    conn: multiprocessing.connection.Connection,
    counters: Any,
    budget: Any,
    index: int,
    cpu: int | None,
    loop: str,
    address: str,
    first_id: int,
    count: int,
    share: float,
    connections: int,
    rpc_timeout: float,
) -> None:
    if cpu is not None:
        set_process_affinity({cpu})
    run_loop(
        loop,
        _hold(
            conn, counters, budget, index, address, first_id, count, share, connections, rpc_timeout
        ),
    )


async def _message(conn: multiprocessing.connection.Connection) -> None:
    """Until the parent has written something on the pipe (it is read by the caller)."""
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()
    loop.add_reader(conn.fileno(), arrived.set)
    try:
        await arrived.wait()
    finally:
        loop.remove_reader(conn.fileno())
        os.set_blocking(conn.fileno(), True)  # the loop made it non-blocking; send() needs it


async def _hold(
    conn: multiprocessing.connection.Connection,
    counters: Any,
    budget: Any,
    index: int,
    address: str,
    first_id: int,
    count: int,
    share: float,
    connections: int,
    rpc_timeout: float,
) -> None:
    """Start `count` streams, as many at a time as `budget` allows (streams the gateway has taken
    plus the window, over all clients, written by the parent; negative: no limit) times `share`
    (this client's part of them), and record how each went."""
    import grpc

    from hapax.v1 import completion_service_pb2 as pb
    from hapax.v1 import completion_service_pb2_grpc as pb_grpc

    # grpc Python channels to one target share a TCP connection unless told otherwise; a local
    # subchannel pool gives each channel its own.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    await asyncio.gather(*(c.channel_ready() for c in channels))
    stubs = [pb_grpc.CompletionServiceStub(c) for c in channels]
    conn.send(("ready", os.getpid()))
    await _message(conn)
    conn.recv()  # "go"
    base = 4 * index
    records: list[Record | None] = [None] * count
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        request = pb.StreamCompleteRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content=f"stream {first_id + i}: hello")],
            max_tokens=1,
        )
        start, first, messages = _clock(), math.nan, 0
        code, detail = "OK", ""
        try:
            call = stubs[i % len(stubs)].StreamComplete(request, timeout=rpc_timeout)
            async for _ in call:
                if not messages:
                    first = _clock()
                    counters[base + FIRST] += 1
                messages += 1
        except grpc.aio.AioRpcError as exc:
            code, detail = exc.code().name, exc.details() or ""
        except asyncio.CancelledError:
            code, detail = "NOT_ENDED", "still open when the benchmark stopped waiting"
        finally:
            counters[base + ENDED] += 1
            if code != "OK" and not messages:
                counters[base + FAILED] += 1
            records[i] = (start, first, _clock(), messages, code, detail)

    async def start_all() -> None:
        started = 0
        while started < count:
            allowed = budget.value
            limit = count if allowed < 0 else min(count, math.ceil(allowed * share))
            while started < limit:
                tasks.append(asyncio.create_task(one(started)))
                started += 1
                counters[base + STARTED] += 1
            if started < count:
                await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)

    everything = asyncio.ensure_future(start_all())
    stop = asyncio.ensure_future(_message(conn))
    waiters: list[asyncio.Future[Any]] = [everything, stop]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    everything.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(everything, *tasks, return_exceptions=True)
    conn.send(("done", records))
    for channel in channels:
        await channel.close()


class Clients:
    """The stream-holding processes, all on one CPU, and their shared progress counters. They
    start streams while fewer than `budget` (set by `allow`) have been started over all clients."""

    def __init__(self, config: Config, address: str, cpu: int | None, rpc_timeout: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counters = ctx.Array("q", 4 * config.clients, lock=False)
        self.budget = ctx.Value("q", config.window if config.window > 0 else -1, lock=False)
        counts = _split(config.streams, config.clients)
        conns = _split(config.connection_count(), config.clients)
        self.connections = sum(conns)
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._processes = []
        self.pids: list[int] = []
        first_id = 0
        for i in range(config.clients):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_client,
                args=(
                    child,
                    self.counters,
                    self.budget,
                    i,
                    cpu,
                    config.loop,
                    address,
                    first_id,
                    counts[i],
                    counts[i] / max(config.streams, 1),
                    conns[i],
                    rpc_timeout,
                ),
                name=f"bench-streams-{i}",
                daemon=True,
            )
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
            first_id += counts[i]

    def allow(self, streams: int) -> None:
        """Let the clients have started up to `streams` streams in all (unless unlimited)."""
        if self.budget.value >= 0:
            self.budget.value = max(self.budget.value, streams)

    def wait_ready(self, timeout: float = 60.0) -> None:
        for pipe in self._pipes:
            try:
                ready = pipe.poll(timeout) and pipe.recv()
            except EOFError:
                ready = None
            if not ready:
                raise RuntimeError("a stream client did not connect to the gateway in time")
            self.pids.append(ready[1])

    def go(self) -> None:
        for pipe in self._pipes:
            pipe.send("go")

    def total(self, which: int) -> int:
        return sum(self.counters[4 * i + which] for i in range(len(self._pipes)))

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
        return total

    def collect(self, timeout: float = 30.0) -> list[Record]:
        """Tell every client to stop waiting (streams still open are cancelled) and take what
        each recorded."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        records: list[Record] = []
        for pipe in self._pipes:
            if pipe.poll(timeout):
                _, got = pipe.recv()
                records.extend(r for r in got if r is not None)
        return records

    def stop(self) -> None:
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self._pipes:
            pipe.close()


# --- this process: the probe calls, the gateway's memory, the phases ------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stream_counts(exposition: str) -> tuple[float, float]:
    """(StreamComplete calls in progress, StreamComplete calls finished) from the gateway's
    /metrics text; NaN for one that is not there."""
    active, finished, seen = math.nan, 0.0, False
    for line in exposition.splitlines():
        if STREAM_METHOD not in line:
            continue
        if line.startswith(HELD_GAUGE + "{"):
            active = float(line.rsplit(" ", 1)[1])
        elif line.startswith(FINISHED_COUNTER + "{"):
            finished += float(line.rsplit(" ", 1)[1])
            seen = True
    return active, finished if seen else math.nan


class HeldGauge:
    """The gateway's own count of the streams it holds, read from its metrics side port: `held`
    (StreamComplete calls in progress) and `taken` (in progress plus finished: every stream the
    gateway ever took), sampled with the phase they were read in."""

    def __init__(self, port: int, run: Run, clients: Clients, config: Config) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.run, self.clients, self.config = run, clients, config
        self.held = self.taken = 0
        self.samples: list[tuple[float, str, int, int]] = []  # time, phase, held, taken
        self.failures = 0
        self.first_error = ""
        self.read_seconds: list[float] = []

    async def poll(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.read(session)
                await asyncio.sleep(self.config.gauge_interval)

    async def read(self, session: Any) -> None:
        t0 = time.perf_counter()
        try:
            async with session.get(self.url) as response:
                response.raise_for_status()
                text = await response.text()
        except Exception as exc:  # a gateway that will not say shows as no samples
            self.failures += 1
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
            return
        active, finished = stream_counts(text)
        if math.isnan(active) or math.isnan(finished):
            self.failures += 1
            self.first_error = self.first_error or "no StreamComplete series in /metrics"
            return
        self.read_seconds.append(time.perf_counter() - t0)
        self.held, self.taken = int(active), int(active + finished)
        self.samples.append((_clock(), self.run.phase, self.held, self.taken))
        self.clients.allow(self.taken + self.config.window)


@dataclasses.dataclass
class Probe:
    phase: str
    sent: float  # on _clock
    latency: float  # seconds; nan when the call failed
    code: str


class Run:
    """The probe calls and the memory samples, each tagged with the phase it was made in."""

    def __init__(self, config: Config, gateway: ServerProcess) -> None:
        self.config, self.gateway = config, gateway
        self.phase = "warmup"
        self.probes: list[Probe] = []
        self.rss: list[tuple[float, str, int]] = []
        self.marks: dict[str, dict[str, float]] = {}
        self._phase_began = (_clock(), gateway.cpu_seconds())

    def enter(self, phase: str) -> None:
        now, cpu = _clock(), self.gateway.cpu_seconds()
        began, cpu0 = self._phase_began
        if self.phase in PHASES:
            self.marks[self.phase] = {
                "seconds": now - began,
                "gateway_cpu_pct": 100 * (cpu - cpu0) / (now - began) if now > began else math.nan,
            }
        self.phase, self._phase_began = phase, (now, cpu)

    def rss_now(self) -> int:
        return rss_bytes(self.gateway.pid)

    async def sample_rss(self) -> None:
        while True:
            self.rss.append((_clock(), self.phase, self.rss_now()))
            await asyncio.sleep(0.2)

    async def send_probes(self, stub: Any, pb: Any) -> None:
        import grpc

        async def one(n: int, phase: str) -> None:
            request = pb.CompleteRequest(
                messages=[pb.Message(role=pb.ROLE_USER, content=f"probe {n}: say hello")]
            )
            sent, t0 = _clock(), time.perf_counter()
            try:
                await stub.Complete(request, timeout=self.config.probe_timeout)
            except grpc.aio.AioRpcError as exc:
                self.probes.append(Probe(phase, sent, math.nan, exc.code().name))
                return
            self.probes.append(Probe(phase, sent, time.perf_counter() - t0, "OK"))

        interval = 1 / self.config.probe_rate
        pending: set[asyncio.Task[None]] = set()
        n, next_at = 0, _clock()
        try:
            while True:
                task = asyncio.create_task(one(n, self.phase))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - _clock()))
        finally:
            await asyncio.gather(*pending, return_exceptions=True)


async def _drive(
    config: Config, gateway: ServerProcess, clients: Clients, metrics_port: int
) -> dict[str, Any]:
    import grpc

    from hapax.v1 import completion_service_pb2 as pb
    from hapax.v1 import completion_service_pb2_grpc as pb_grpc

    run = Run(config, gateway)
    gauge = HeldGauge(metrics_port, run, clients, config)
    channel = grpc.aio.insecure_channel(
        gateway.address, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    await channel.channel_ready()
    stub = pb_grpc.CompletionServiceStub(channel)
    sampler = asyncio.create_task(run.sample_rss())
    prober = asyncio.create_task(run.send_probes(stub, pb))
    poller = asyncio.create_task(gauge.poll())  # in every phase, so idle pays for it too
    n = config.streams
    held_at_plateau = 0
    try:
        await asyncio.sleep(config.warmup)
        run.enter("idle")
        await asyncio.sleep(config.idle)
        rss_before = run.rss_now()
        run.enter("opening")
        opened_at = _clock()
        clients.go()
        # Opening ends when the gateway has taken every stream (or it failed before any message);
        # holding, when the first answer comes. A slow machine may see answers before the last
        # stream is taken: no holding then. (The counters live in memory the clients write and
        # the gauge is read by its own task; there is nothing to await but time.)
        ramp_limit = opened_at + config.chunk_delay + 60
        while (  # noqa: ASYNC110
            gauge.taken + clients.total(FAILED) < n
            and clients.total(FIRST) == 0
            and clients.total(ENDED) < n
            and _clock() < ramp_limit
        ):
            await asyncio.sleep(0.02)
        all_open_at = _clock() if clients.total(FIRST) == 0 else math.nan
        run.enter("holding")
        # RSS with the most streams held: the last reading while the gateway held as many as it
        # ever did (by the time a client sees the first answer, the gateway has sent some).
        rss_plateau, held_at_plateau = run.rss_now(), gauge.held
        while clients.total(FIRST) == 0 and clients.total(ENDED) < n and _clock() < ramp_limit:
            if gauge.held >= held_at_plateau:
                rss_plateau, held_at_plateau = run.rss_now(), gauge.held
            await asyncio.sleep(0.05)
        run.enter("answering")
        answer_limit = _clock() + config.chunk_delay + 60
        while clients.total(ENDED) < n and _clock() < answer_limit:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        run.enter("after")
        await asyncio.sleep(config.settle)
        rss_after = run.rss_now()
        run.enter("done")
    finally:
        for task in (prober, sampler, poller):
            task.cancel()
        await asyncio.gather(prober, sampler, poller, return_exceptions=True)
        await channel.close()
    records = clients.collect()
    return {
        "run": run,
        "gauge": gauge,
        "records": records,
        "opened_at": opened_at,
        "all_open_at": all_open_at,
        "rss_before": rss_before,
        "rss_plateau": rss_plateau,
        "held_at_plateau": held_at_plateau,
        "rss_after": rss_after,
    }


# --- figures --------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(v for v in values if not math.isnan(v))
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
    }


def _held_figures(gauge: HeldGauge, opened_at: float) -> dict[str, Any]:
    """What the gateway's own counts said: its peak of streams held, when it had taken them all,
    and how many it still held in each phase."""
    samples = gauge.samples
    by_phase: dict[str, dict[str, int]] = {}
    for phase in PHASES:
        mine = [s[2] for s in samples if s[1] == phase]
        if mine:
            by_phase[phase] = {"min": min(mine), "max": max(mine), "last": mine[-1]}
    read = sorted(gauge.read_seconds)
    return {
        "source": f"{HELD_GAUGE}{{{STREAM_METHOD}}} on the metrics side port, every "
        f"{gauge.config.gauge_interval:g} s",
        "samples": len(samples),
        "failed_reads": gauge.failures,
        "first_error": gauge.first_error,
        "read_ms_p50": 1000 * percentile(read, 50),
        "peak_held": max((s[2] for s in samples), default=0),
        "taken": max((s[3] for s in samples), default=0),
        "held_by_phase": by_phase,
        "series": [(round(t - opened_at, 2), p, h, k) for t, p, h, k in samples],
    }


def _probe_figures(probes: Sequence[Probe], phase: str) -> dict[str, Any]:
    mine = [p for p in probes if p.phase == phase]
    ok = sorted(p.latency for p in mine if p.code == "OK")
    return {
        "sent": len(mine),
        "answered": len(ok),
        "errors": dict(collections.Counter(p.code for p in mine if p.code != "OK")),
        "p50_ms": 1000 * percentile(ok, 50),
        "p99_ms": 1000 * percentile(ok, 99),
        "max_ms": 1000 * ok[-1] if ok else math.nan,
        "slow": sum(1 for v in ok if v > SLOW_PROBE),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _result(
    config: Config,
    env: dict[str, Any],
    got: dict[str, Any],
    placement: dict[str, Any],
) -> dict[str, Any]:
    records: list[Record] = got["records"]
    run: Run = got["run"]
    n = config.streams
    held = _held_figures(got["gauge"], got["opened_at"])
    with_first = [r for r in records if not math.isnan(r[1])]
    errors = collections.Counter(r[4] for r in records if r[4] != "OK")
    details = {}
    for r in records:
        if r[4] != "OK" and r[4] not in details:
            details[r[4]] = r[5]
    missing = n - len(records)
    if missing:
        errors["NOT_RECORDED"] += missing
    before, plateau, after = got["rss_before"], got["rss_plateau"], got["rss_after"]
    held_at_plateau = got["held_at_plateau"]
    starts = [r[0] for r in records]
    # Opening took until the gateway's count of streams taken reached the streams requested.
    all_taken = [t for t, _, _, k in got["gauge"].samples if k >= n]
    ramp = all_taken[0] - got["opened_at"] if all_taken else math.nan
    probes = {phase: _probe_figures(run.probes, phase) for phase in PHASES}
    idle, holding = probes["idle"], probes["holding"]
    ratios = {
        "p50": _ratio(holding["p50_ms"], idle["p50_ms"]),
        "p99": _ratio(holding["p99_ms"], idle["p99_ms"]),
    }
    result: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "environment": env,
        "placement": placement,
        "streams": {
            "requested": n,
            "taken": held["taken"],
            "peak_held": held["peak_held"],
            "with_first_message": len(with_first),
            "completed_ok": sum(1 for r in records if r[4] == "OK"),
            "errors": dict(errors),
            "error_details": details,
            "opening_seconds": ramp,
            "started_over_seconds": (max(starts) - min(starts)) if starts else math.nan,
            "time_to_first_message_s": _stats([r[1] - r[0] for r in with_first]),
        },
        "gauge": {k: v for k, v in held.items() if k not in ("peak_held", "taken")},
        "rss": {
            "before_bytes": before,
            "plateau_bytes": plateau,
            "peak_bytes": max((s[2] for s in run.rss), default=0),
            "after_bytes": after,
            "held_at_plateau": held_at_plateau,
            "per_stream_bytes": (
                (plateau - before) / held_at_plateau if held_at_plateau else math.nan
            ),
            "samples": [(round(t - got["opened_at"], 2), p, b) for t, p, b in run.rss],
        },
        "phases": run.marks,
        "probes": probes,
        "probe_ratio_holding_vs_idle": ratios,
    }
    result["empty_figures"] = empty_figures(result, FIGURES)
    result["aims"] = aims(result)
    # When the slow calls were sent, relative to the streams' start: stalls show as runs of
    # calls 20 ms apart whose latencies fall by 20 ms each.
    result["slow_probes"] = [
        (round(p.sent - got["opened_at"], 2), p.phase, round(1000 * p.latency, 1))
        for p in run.probes
        if p.code == "OK" and p.latency > SLOW_PROBE
    ]
    return result


def aims(result: dict[str, Any]) -> dict[str, Any]:
    """Both aims, judged on what the gateway said it held; neither is met on an empty figure."""
    streams, rss, ratios = result["streams"], result["rss"], result["probe_ratio_holding_vs_idle"]
    holding = result["probes"]["holding"]
    measured = not result["empty_figures"]
    all_held = rss["held_at_plateau"] == streams["requested"] and not streams["errors"]
    calm = (
        holding["sent"] > 0
        and holding["answered"] == holding["sent"]
        and all(not math.isnan(v) and v <= AIM_PROBE_RATIO for v in ratios.values())
    )
    return {
        "memory": {
            "streams_held": rss["held_at_plateau"],
            "rss_bytes": rss["plateau_bytes"],
            "target": f"{streams['requested']} streams held at once, RSS < 1 GiB",
            "met": bool(measured and all_held and rss["plateau_bytes"] < AIM_RSS_BYTES),
        },
        "calls_meanwhile": {
            "answered": f"{holding['answered']}/{holding['sent']}",
            "ratios": ratios,
            "target": f"all answered, p50 and p99 <= {AIM_PROBE_RATIO:g}x the idle gateway's",
            "met": bool(measured and calm),
        },
    }


# --- running it -----------------------------------------------------------------------------------


def gateway_overrides(config: Config, metrics_port: int) -> dict[str, Any]:
    """The gateway under test: one `local` provider, slow to answer by `chunk_delay`, and its
    metrics side port on `metrics_port`, where the benchmark reads how many streams it holds."""
    base: dict[str, Any] = {
        "providers": [
            {
                "name": "slow",
                "type": "local",
                "models": {"*": "*"},
                "options": {"chunk_delay": f"{config.chunk_delay:g}"},
            }
        ],
        "default_model": "default",
        "auth": {"enabled": False},
    }
    merged = {**base, **config.overrides}  # merged into the harness's gateway settings
    metrics = merged.get("metrics")
    merged["metrics"] = {
        **(metrics if isinstance(metrics, dict) else {}),
        "enabled": True,
        "address": f"127.0.0.1:{metrics_port}",
    }
    return merged


def run(config: Config) -> dict[str, Any]:
    """Start the gateway and the stream clients, run the phases from this process, and return
    the results (JSON-ready)."""
    env = environment()
    server_cpu, client_cpu = cpu_plan(config.pin)
    # A stream's deadline outlasts the upstream's delay, so the caller's deadline (not the
    # router's default_deadline, 60 s) bounds the wait for the first chunk.
    stream_timeout = config.chunk_delay + 60
    metrics_port = free_port()
    with pinned(client_cpu):
        gateway = ServerProcess(
            "gateway",
            "gateway",
            cpu=server_cpu,
            loop=config.loop,
            source=config.source,
            overrides=gateway_overrides(config, metrics_port),
        )
        with started([gateway]):
            clients = Clients(config, gateway.address, client_cpu, stream_timeout)
            try:
                clients.wait_ready()
                client_cpu0 = clients.cpu_seconds()
                began = _clock()
                got = run_loop(config.loop, _drive(config, gateway, clients, metrics_port))
                elapsed = _clock() - began
                client_cpu_used = clients.cpu_seconds() - client_cpu0
            finally:
                clients.stop()
            placement = {
                "gateway_cpu": server_cpu,
                "clients_cpu": client_cpu,
                "client_processes": config.clients,
                "stream_connections": clients.connections,
                "probe_connection": "its own, from this process",
                "event_loop": gateway.loop_class,
                "hapaxd": gateway.hapaxd_path,
                "stream_clients_cpu_pct": 100 * client_cpu_used / elapsed,
            }
    env["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return _result(config, env, got, placement)


def _mb(n: float) -> str:
    return _f(n / 1e6, ".0f") + " MB"


def format_table(result: dict[str, Any]) -> str:
    cfg, s, rss, place = result["config"], result["streams"], result["rss"], result["placement"]
    first, gauge = s["time_to_first_message_s"], result["gauge"]
    pin = (
        f"gateway on CPU {place['gateway_cpu']}, clients on CPU {place['clients_cpu']}"
        if place["gateway_cpu"] is not None
        else "not pinned"
    )
    opening = (
        "all at once (burst)"
        if cfg["window"] <= 0
        else f"at most {cfg['window']} waiting to be taken at a time"
    )
    lines = [
        f"{s['requested']} StreamComplete streams against a local provider slow to answer "
        f"(chunk_delay {cfg['chunk_delay']:g} s, max_tokens 1)",
        f"  {place['client_processes']} client processes, {place['stream_connections']} "
        f"connections, opened {opening}; probe Complete calls at {cfg['probe_rate']:g}/s on their "
        f"own connection; {pin}; loop {cfg['loop']}",
        "",
        f"streams requested {s['requested']}, taken by the gateway {s['taken']} (in "
        f"{_f(s['opening_seconds'], '.1f')} s), held at once (peak) {s['peak_held']}; as the "
        f"gateway counts them ({HELD_GAUGE}, read {gauge['samples']} times, "
        f"{gauge['failed_reads']} failed)",
        f"first message {s['with_first_message']}: time to first message p50 "
        f"{_f(first['p50'], '.2f')} s, p99 {_f(first['p99'], '.2f')} s, max "
        f"{_f(first['max'], '.2f')} s (the upstream's delay is {cfg['chunk_delay']:g} s); "
        f"completed OK {s['completed_ok']}",
    ]
    if s["errors"]:
        lines.append(
            "stream errors: "
            + ", ".join(
                f"{code} {count} ({s['error_details'].get(code, '')[:70]})"
                for code, count in sorted(s["errors"].items())
            )
        )
    else:
        lines.append("stream errors: none")
    lines += [
        "",
        f"gateway RSS: before {_mb(rss['before_bytes'])}, with {rss['held_at_plateau']} held "
        f"{_mb(rss['plateau_bytes'])}, peak {_mb(rss['peak_bytes'])}, after "
        f"{_mb(rss['after_bytes'])}",
        f"RSS per held stream: {_f(rss['per_stream_bytes'] / 1024, '.1f')} KiB "
        f"((with held - before) / {rss['held_at_plateau']})",
        "",
        f"{'phase':<11}{'seconds':>8}{'gw CPU':>8}{'held':>13}{'probes':>8}{'answered':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'>50ms':>7}  errors",
    ]
    for phase in PHASES:
        mark = result["phases"].get(phase, {})
        p = result["probes"][phase]
        h = gauge["held_by_phase"].get(phase)
        held = (
            f"{h['min']}-{h['max']}" if h and h["min"] != h["max"] else str(h["max"] if h else "-")
        )
        lines.append(
            f"{phase:<11}{_f(mark.get('seconds', math.nan), '8.1f')}"
            f"{_f(mark.get('gateway_cpu_pct', math.nan), '7.0f')}%{held:>13}"
            f"{p['sent']:>8}{p['answered']:>9}"
            f"{_f(p['p50_ms'], '9.2f')}{_f(p['p99_ms'], '9.2f')}{_f(p['max_ms'], '9.1f')}"
            f"{p['slow']:>7}  " + (", ".join(f"{k} {v}" for k, v in p["errors"].items()) or "-")
        )
    ratios = result["probe_ratio_holding_vs_idle"]
    lines += [
        f"probe calls while the streams were held / on the idle gateway: p50 "
        f"x{_f(ratios['p50'], '.2f')}, p99 x{_f(ratios['p99'], '.2f')}",
        f"(stream clients' CPU {_f(place['stream_clients_cpu_pct'], '.0f')}% of one core over "
        f"the run)",
        "",
    ]
    if gauge["first_error"]:
        lines.append(f"reading the gateway's metrics: {gauge['first_error'][:100]}")
    if result["empty_figures"]:
        lines.append(
            "EMPTY FIGURES (the measurement came back with nothing): "
            + ", ".join(result["empty_figures"])
        )
    memory, calls = result["aims"]["memory"], result["aims"]["calls_meanwhile"]
    lines.append(
        f"Aim: {memory['target']}: {memory['streams_held']} held, "
        f"{_mb(memory['rss_bytes'])} -> {'MET' if memory['met'] else 'NOT MET'}"
    )
    lines.append(
        f"Aim: calls meanwhile {calls['target']}: {calls['answered']} answered, p50 "
        f"x{_f(calls['ratios']['p50'], '.2f')}, p99 x{_f(calls['ratios']['p99'], '.2f')} -> "
        f"{'MET' if calls['met'] else 'NOT MET'}"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, help="streams to hold (default 10000; quick 2000)")
    parser.add_argument("--quick", action="store_true", help="2,000 streams, 8 s delay: ~15 s")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--chunk-delay", type=float, help="the upstream's delay, s (default 30)")
    parser.add_argument(
        "--connections", type=int, help=f"default: streams/{STREAMS_PER_CONNECTION}"
    )
    parser.add_argument("--clients", type=int, help="stream client processes (default 2)")
    parser.add_argument(
        "--window",
        type=int,
        help="streams started but not yet taken by the gateway, at most (default 400); 0 opens "
        "all at once",
    )
    parser.add_argument(
        "--gateway",
        metavar="SOURCE[:key.path=value,...]",
        help="the gateway's source tree and config overrides, as benchmarks.compare's --variant",
    )
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")


def config_from(args: argparse.Namespace) -> Config:
    config = Config.quick() if args.quick else Config()
    for name in ("streams", "chunk_delay", "connections", "clients", "window"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    if getattr(args, "gateway", None):
        from benchmarks.compare import parse_variant

        _, source, overrides = parse_variant(f"gateway={args.gateway}")
        config.source = source
        config.overrides = overrides
    config.loop = args.loop
    config.pin = not args.no_pin
    return config


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(config_from(args))
    print(format_table(result))
    if args.json:
        write_json(args.json, {"streams": result})
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
