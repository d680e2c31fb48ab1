"""The gRPC load generator: closed-loop workers on a real grpc.aio channel, each sending its own
request (distinct prompts, so the gateway's in-flight deduplication never shares a call), and the
rounds that alternate the targets under test so drift and noise hit them alike."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from benchmarks.harness import (
    ServerProcess,
    cpu_busy_seconds,
    cpu_plan,
    median,
    percentile,
    pinned,
    run_loop,
    started,
)
from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc

KINDS = ("unary", "stream")
Cell = tuple[str, int]  # (kind, concurrency)
METRICS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "server_cpu_pct",
    "server_cpu_us_per_request",
    "client_cpu_pct",
    "upstream_cpu_pct",
    "messages_per_call",
    "others_on_server_cpu_pct",
)


def make_requests(kind: str, concurrency: int) -> list[Any]:
    """One request per worker; a worker has one call in flight, so no two in flight are equal."""
    cls = pb.CompleteRequest if kind == "unary" else pb.StreamCompleteRequest
    return [
        cls(messages=[pb.Message(role=pb.ROLE_USER, content=f"benchmark worker {w}: say hello")])
        for w in range(concurrency)
    ]


@dataclasses.dataclass
class Sample:
    """One measurement of one target at one cell."""

    requests: int
    errors: int
    elapsed: float
    messages: int
    latencies: list[float]
    client_cpu: float
    server_cpu: float | None = None
    upstream_cpu: float | None = None
    others_on_server_cpu: float | None = None  # busy time on the server's CPU not its own
    first_error: str = ""

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        n = max(self.requests, 1)

        def pct(cpu: float | None) -> float:
            return math.nan if cpu is None else 100 * cpu / self.elapsed

        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": self.requests / self.elapsed if self.elapsed > 0 else 0.0,
            "p50_ms": 1000 * percentile(lat, 50),
            "p99_ms": 1000 * percentile(lat, 99),
            "server_cpu_pct": pct(self.server_cpu),
            "server_cpu_us_per_request": (
                math.nan if self.server_cpu is None else 1e6 * self.server_cpu / n
            ),
            "client_cpu_pct": pct(self.client_cpu),
            "upstream_cpu_pct": pct(self.upstream_cpu),
            "messages_per_call": self.messages / n,
            "others_on_server_cpu_pct": pct(self.others_on_server_cpu),
        }


def budget(duration: float, max_requests: int | None) -> Callable[[], bool]:
    """Whether a worker may start another call: until `max_requests` calls were started in all
    (when given), else for `duration` seconds from now."""
    clock = time.perf_counter
    deadline = clock() + duration
    started = 0

    def more() -> bool:
        nonlocal started
        if max_requests is not None:
            if started >= max_requests:
                return False
            started += 1
            return True
        return clock() < deadline

    return more


async def drive(
    stub: pb_grpc.CompletionServiceStub,
    kind: str,
    concurrency: int,
    *,
    duration: float,
    max_requests: int | None = None,
    rpc_timeout: float = 10.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Sample:
    """`concurrency` workers sending back to back for `duration` seconds (or until max_requests
    calls were started, when given). Every call carries a deadline, as real callers' do, and
    `metadata` (an API key, say). A stub of another protocol (one with its own `drive`, as
    benchmarks/openai_http.py's) drives itself the same way."""
    own = getattr(stub, "drive", None)
    if own is not None:
        sample: Sample = await own(
            kind, concurrency, duration=duration, max_requests=max_requests, metadata=metadata
        )
        return sample
    requests = make_requests(kind, concurrency)
    latencies: list[float] = []
    counts = {"errors": 0, "messages": 0}
    first_error = ""
    clock = time.perf_counter
    more = budget(duration, max_requests)

    async def unary_worker(request: Any) -> None:
        nonlocal first_error
        while more():
            t0 = clock()
            try:
                await stub.Complete(request, timeout=rpc_timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                counts["errors"] += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"
                continue
            latencies.append(clock() - t0)
            counts["messages"] += 1

    async def stream_worker(request: Any) -> None:
        nonlocal first_error
        while more():
            t0 = clock()
            received = 0
            try:
                async for _ in stub.StreamComplete(request, timeout=rpc_timeout, metadata=metadata):
                    received += 1
            except grpc.aio.AioRpcError as exc:
                counts["errors"] += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"
                continue
            latencies.append(clock() - t0)
            counts["messages"] += received

    worker = unary_worker if kind == "unary" else stream_worker
    cpu0 = time.process_time()
    start = clock()
    await asyncio.gather(*(worker(r) for r in requests))
    elapsed = clock() - start
    return Sample(
        requests=len(latencies),
        errors=counts["errors"],
        elapsed=elapsed,
        messages=counts["messages"],
        latencies=latencies,
        client_cpu=time.process_time() - cpu0,
        first_error=first_error,
    )


@dataclasses.dataclass
class Target:
    """A server under test and a real grpc.aio channel to it (opened inside the running loop)."""

    name: str
    server: ServerProcess
    metadata: tuple[tuple[str, str], ...] = ()  # sent with every call
    channel: grpc.aio.Channel | None = None
    stub: pb_grpc.CompletionServiceStub | None = None

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.server.address)
        await self.channel.channel_ready()
        self.stub = pb_grpc.CompletionServiceStub(self.channel)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


async def measure(
    target: Target,
    kind: str,
    concurrency: int,
    *,
    duration: float,
    max_requests: int | None,
    upstream: ServerProcess | None,
) -> Sample:
    assert target.stub is not None
    cpu = target.server.cpu
    busy0 = cpu_busy_seconds(cpu) if cpu is not None else 0.0
    server0 = target.server.cpu_seconds()
    upstream0 = upstream.cpu_seconds() if upstream else 0.0
    sample = await drive(
        target.stub,
        kind,
        concurrency,
        duration=duration,
        max_requests=max_requests,
        metadata=target.metadata,
    )
    sample.server_cpu = target.server.cpu_seconds() - server0
    if cpu is not None:
        busy = cpu_busy_seconds(cpu) - busy0
        sample.others_on_server_cpu = max(0.0, busy - sample.server_cpu)
    if upstream is not None:
        sample.upstream_cpu = upstream.cpu_seconds() - upstream0
    return sample


async def alternate(
    targets: Sequence[Target],
    cells: Sequence[Cell],
    *,
    rounds: int,
    duration: float,
    warmup: float,
    initial_warmup: float,
    max_requests: int | None = None,
    upstream: ServerProcess | None = None,
    progress: Any = None,
) -> dict[Cell, dict[str, list[Sample]]]:
    """Every target at every cell, `rounds` times. Within a round the targets run back to back at
    each cell, in an order that flips every round, so slow drift and neighbours' noise fall on
    both alike; each measurement is preceded by a short warm-up at the same cell."""
    samples: dict[Cell, dict[str, list[Sample]]] = {
        cell: {t.name: [] for t in targets} for cell in cells
    }
    for target in targets:
        await target.open()
    try:
        if initial_warmup > 0:
            for kind, concurrency in cells:
                for target in targets:
                    assert target.stub is not None
                    await drive(
                        target.stub,
                        kind,
                        concurrency,
                        duration=initial_warmup,
                        metadata=target.metadata,
                    )
        for r in range(rounds):
            for cell in cells:
                kind, concurrency = cell
                order = list(targets) if r % 2 == 0 else list(reversed(targets))
                for target in order:
                    assert target.stub is not None
                    if warmup > 0:
                        await drive(
                            target.stub,
                            kind,
                            concurrency,
                            duration=warmup,
                            metadata=target.metadata,
                        )
                    sample = await measure(
                        target,
                        kind,
                        concurrency,
                        duration=duration,
                        max_requests=max_requests,
                        upstream=upstream,
                    )
                    samples[cell][target.name].append(sample)
                    if progress is not None:
                        progress(r, cell, target.name, sample)
    finally:
        for target in targets:
            await target.close()
    return samples


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Median over rounds of each metric; totals of requests and errors; each round's figures."""
    per_round = [s.summary() for s in samples]
    out: dict[str, Any] = {k: median([r[k] for r in per_round]) for k in METRICS}
    out["requests"] = sum(s.requests for s in samples)
    out["errors"] = sum(s.errors for s in samples)
    first = next((s.first_error for s in samples if s.first_error), "")
    if first:
        out["first_error"] = first
    out["rounds"] = [
        {k: round(r[k], 4) for k in ("rps", "p50_ms", "p99_ms", "server_cpu_pct")}
        for r in per_round
    ]
    return out


def paired(a: Sequence[Sample], b: Sequence[Sample]) -> dict[str, float]:
    """a against b, round by round (each pair ran back to back), then the median."""
    pairs = [(x.summary(), y.summary()) for x, y in zip(a, b, strict=True)]
    return {
        "rps_ratio": median([x["rps"] / y["rps"] if y["rps"] else math.nan for x, y in pairs]),
        "p50_added_ms": median([x["p50_ms"] - y["p50_ms"] for x, y in pairs]),
        "p99_added_ms": median([x["p99_ms"] - y["p99_ms"] for x, y in pairs]),
        "cpu_per_request_ratio": median(
            [
                x["server_cpu_us_per_request"] / y["server_cpu_us_per_request"]
                if y["server_cpu_us_per_request"]
                else math.nan
                for x, y in pairs
            ]
        ),
    }


@dataclasses.dataclass
class Rounds:
    """How the targets are driven: every cell, `rounds` times, each measurement `duration`
    seconds (or `max_requests` calls) after a `warmup`; `initial_warmup` once at the start."""

    cells: Sequence[Cell]
    rounds: int
    duration: float
    warmup: float
    initial_warmup: float
    max_requests: int | None = None


def gateways_in_rounds(
    variants: Mapping[str, Mapping[str, Any]],
    rounds: Rounds,
    *,
    pin: bool = True,
    loop: str = "uvloop",
    floor: bool = False,
    metadata: tuple[tuple[str, str], ...] = (),
    announce: Callable[[Sequence[ServerProcess]], None] | None = None,
    targets: Callable[[Sequence[ServerProcess]], list[Target]] | None = None,
) -> tuple[dict[Cell, dict[str, list[Sample]]], tuple[int | None, int | None]]:
    """What every A/B benchmark here does: the fake upstream and the load generator on the
    client CPU, one gateway process per variant (name -> ServerProcess keyword arguments: loop,
    source, overrides) and optionally the floor on the server CPU, driven in alternating rounds
    with `metadata` on every call; `targets` makes other targets of the servers than one gRPC
    target each. Returns the samples and (server CPU, client CPU)."""
    server_cpu, client_cpu = cpu_plan(pin)
    with pinned(client_cpu):
        upstream = ServerProcess("upstream", "upstream", cpu=client_cpu, loop=loop)
        upstream.wait_ready()
        try:
            servers = [
                ServerProcess(
                    name,
                    "gateway",
                    cpu=server_cpu,
                    upstream_port=upstream.port,
                    **{"loop": loop, **kwargs},
                )
                for name, kwargs in variants.items()
            ]
            if floor:
                servers.append(ServerProcess("floor", "floor", cpu=server_cpu, loop=loop))
            with started(servers):
                if announce is not None:
                    announce(servers)
                made = (
                    targets(servers)
                    if targets is not None
                    else [Target(s.name, s, metadata=metadata) for s in servers]
                )
                samples = run_loop(
                    loop,
                    alternate(
                        made,
                        list(rounds.cells),
                        rounds=rounds.rounds,
                        duration=rounds.duration,
                        warmup=rounds.warmup,
                        initial_warmup=rounds.initial_warmup,
                        max_requests=rounds.max_requests,
                        upstream=upstream,
                    ),
                )
        finally:
            upstream.stop()
    return samples, (server_cpu, client_cpu)
