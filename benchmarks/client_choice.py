"""The measurements behind two choices (benchmarks/README.md has the figures):

1. The upstream HTTP client: aiohttp against httpx doing the same POSTs of a chat completion to
   the same fast fake upstream, one at a time (sequential) and 16 at a time (concurrent), plus
   reading the streamed (SSE) answer. The fake upstream runs in its own process pinned to CPU 0;
   the client under test runs here, pinned to CPU 1, so its CPU time per request is its own.
2. The gateway's event loop: the same gateway started under the default asyncio loop and under
   uvloop (what `hapaxd serve` uses), each in its own process pinned to CPU 0, driven in
   alternation like benchmarks/gateway.py does.

    python -m benchmarks.client_choice [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from benchmarks.harness import (
    ServerProcess,
    cpu_plan,
    environment,
    median,
    percentile,
    pinned,
    run_loop,
    started,
)
from benchmarks.load import Sample, Target, alternate, paired, summarize

BODY = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "benchmark: say hello"}],
    "max_tokens": 64,
}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
CLIENTS = ("aiohttp", "httpx", "bare")
MODES = (("sequential", 1, False), ("concurrent", 16, False), ("stream", 16, True))


@dataclasses.dataclass
class Config:
    rounds: int = 3
    duration: float = 0.8
    warmup: float = 0.1
    loop_rounds: int = 3
    loop_duration: float = 1.2
    loop_cells: tuple[tuple[str, int], ...] = (("unary", 1), ("unary", 16), ("stream", 16))
    client_loop: str = "uvloop"  # the loop the HTTP clients run on (the gateway's)
    max_requests: int | None = None
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=1, duration=0.4, warmup=0.05, loop_rounds=1, loop_duration=0.4)


# --- HTTP clients ---------------------------------------------------------------------------------

Post = Callable[[], Awaitable[int]]  # one request; returns bytes read


class AiohttpClient:
    """Configured as hapaxd.providers.http_client.HttpClient configures its session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=600, connect=5, sock_read=30),
            json_serialize=json.dumps,
            trust_env=False,
        )

    async def post(self) -> int:
        async with self.session.post(self.url, json=BODY) as response:
            raw = await response.read()
            response.raise_for_status()
        json.loads(raw)
        return len(raw)

    async def stream(self) -> int:
        n = 0
        async with self.session.post(self.url, json=STREAM_BODY) as response:
            response.raise_for_status()
            async for data in response.content.iter_any():
                n += len(data)
        return n

    async def aclose(self) -> None:
        await self.session.close()


class _BareConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.body_start = 0
        self.body_end: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.body_end is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.index(b"content-length:") + len(b"content-length:")
            length = int(head[at:].split(b"\r\n", 1)[0])
            self.body_start, self.body_end = end + 4, end + 4 + length
        if len(self.buffer) >= self.body_end and self.waiter is not None:
            body = bytes(self.buffer[self.body_start : self.body_end])
            del self.buffer[: self.body_end]
            self.body_end = None
            self.waiter.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed the connection"))


class BareClient:
    """Not a usable client: the least a keep-alive HTTP/1.1 POST can cost on asyncio (one write,
    one Content-Length response, no chunked bodies, no timeouts, no errors). The reference the
    real clients are measured against."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self.idle: list[_BareConnection] = []
        self.all: list[_BareConnection] = []

    async def _exchange(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await loop.create_connection(_BareConnection, self.host, self.port)
            self.all.append(conn)
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (self.path.encode(), self.host.encode(), len(payload), payload)
        )
        raw = await conn.waiter
        conn.waiter = None
        self.idle.append(conn)
        return raw

    async def post(self) -> int:
        raw = await self._exchange(BODY)
        json.loads(raw)
        return len(raw)

    async def stream(self) -> int:
        return len(await self._exchange(STREAM_BODY))

    async def aclose(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()


class HttpxClient:
    """The same pool size and timeouts, HTTP/1.1."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            timeout=httpx.Timeout(600, connect=5, read=30),
            trust_env=False,
        )

    async def post(self) -> int:
        response = await self.client.post(self.url, json=BODY)
        response.raise_for_status()
        json.loads(response.content)
        return len(response.content)

    async def stream(self) -> int:
        n = 0
        async with self.client.stream("POST", self.url, json=STREAM_BODY) as response:
            response.raise_for_status()
            async for data in response.aiter_bytes():
                n += len(data)
        return n

    async def aclose(self) -> None:
        await self.client.aclose()


async def _drive_http(
    call: Post, concurrency: int, duration: float, max_requests: int | None
) -> Sample:
    latencies: list[float] = []
    started_count = 0
    errors = 0
    first_error = ""
    clock = time.perf_counter
    deadline = clock() + duration

    def more() -> bool:
        nonlocal started_count
        if max_requests is not None:
            started_count += 1
            return started_count <= max_requests
        return clock() < deadline

    async def worker() -> None:
        nonlocal errors, first_error
        while more():
            t0 = clock()
            try:
                await call()
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                continue
            latencies.append(clock() - t0)

    cpu0 = time.process_time()
    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - start
    return Sample(
        requests=len(latencies),
        errors=errors,
        elapsed=elapsed,
        messages=len(latencies),
        latencies=latencies,
        client_cpu=time.process_time() - cpu0,
        first_error=first_error,
    )


async def _compare_clients(
    url: str, config: Config, upstream: ServerProcess
) -> dict[str, dict[str, list[Sample]]]:
    clients: dict[str, AiohttpClient | HttpxClient | BareClient] = {
        "aiohttp": AiohttpClient(url),
        "httpx": HttpxClient(url),
        "bare": BareClient(url),
    }
    samples: dict[str, dict[str, list[Sample]]] = {
        mode: {name: [] for name in clients} for mode, _, _ in MODES
    }
    try:
        for r in range(config.rounds):
            for mode, concurrency, stream in MODES:
                order = list(clients) if r % 2 == 0 else list(reversed(clients))
                for name in order:
                    client = clients[name]
                    call: Post = client.stream if stream else client.post
                    if config.warmup > 0:
                        await _drive_http(call, concurrency, config.warmup, None)
                    up0 = upstream.cpu_seconds()
                    sample = await _drive_http(
                        call, concurrency, config.duration, config.max_requests
                    )
                    sample.upstream_cpu = upstream.cpu_seconds() - up0
                    samples[mode][name].append(sample)
    finally:
        for client in clients.values():
            await client.aclose()
    return samples


def _client_summary(samples: list[Sample]) -> dict[str, Any]:
    per_round = []
    for s in samples:
        lat = sorted(s.latencies)
        per_round.append(
            {
                "rps": s.requests / s.elapsed if s.elapsed else 0.0,
                "p50_ms": 1000 * percentile(lat, 50),
                "p99_ms": 1000 * percentile(lat, 99),
                "client_cpu_us_per_request": 1e6 * s.client_cpu / max(s.requests, 1),
                "client_cpu_pct": 100 * s.client_cpu / s.elapsed if s.elapsed else math.nan,
            }
        )
    out: dict[str, Any] = {k: median([r[k] for r in per_round]) for k in per_round[0]}
    out["requests"] = sum(s.requests for s in samples)
    out["errors"] = sum(s.errors for s in samples)
    first = next((s.first_error for s in samples if s.first_error), "")
    if first:
        out["first_error"] = first
    return out


def _client_pair(by: dict[str, list[Sample]]) -> dict[str, float]:
    """aiohttp against httpx and against the bare reference, round by round, then the median."""

    def rps(s: Sample) -> float:
        return s.requests / s.elapsed if s.elapsed else math.nan

    def cpu(s: Sample) -> float:
        return s.client_cpu / s.requests if s.requests else math.nan

    a, h, b = by["aiohttp"], by["httpx"], by["bare"]
    return {
        "aiohttp_over_httpx_rps": median([rps(x) / rps(y) for x, y in zip(a, h, strict=True)]),
        "httpx_over_aiohttp_cpu_per_request": median(
            [cpu(y) / cpu(x) for x, y in zip(a, h, strict=True)]
        ),
        "aiohttp_over_bare_cpu_per_request": median(
            [cpu(x) / cpu(y) for x, y in zip(a, b, strict=True)]
        ),
    }


# --- the run --------------------------------------------------------------------------------------


def run(config: Config) -> dict[str, Any]:
    env = environment()
    server_cpu, client_cpu = cpu_plan(config.pin)
    with pinned(client_cpu):
        # 1. HTTP clients: the upstream alone on the server CPU, the clients here.
        upstream = ServerProcess("upstream", "upstream", cpu=server_cpu, loop="uvloop")
        with started([upstream]):
            url = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
            client_samples = run_loop(config.client_loop, _compare_clients(url, config, upstream))
        clients = {
            mode: {
                **{name: _client_summary(s) for name, s in by.items()},
                **_client_pair(by),
            }
            for mode, by in client_samples.items()
        }
        # 2. Event loops: two gateways, one per loop, on the server CPU; upstream next to us.
        upstream = ServerProcess("upstream", "upstream", cpu=client_cpu, loop="uvloop")
        upstream.wait_ready()
        try:
            servers = [
                ServerProcess(
                    f"gateway-{loop}",
                    "gateway",
                    cpu=server_cpu,
                    loop=loop,
                    upstream_port=upstream.port,
                )
                for loop in ("uvloop", "asyncio")
            ]
            with started(servers):
                targets = [Target(s.loop, s) for s in servers]
                loop_samples = run_loop(
                    "uvloop",
                    alternate(
                        targets,
                        list(config.loop_cells),
                        rounds=config.loop_rounds,
                        duration=config.loop_duration,
                        warmup=config.warmup,
                        initial_warmup=config.warmup,
                        max_requests=config.max_requests,
                        upstream=upstream,
                    ),
                )
        finally:
            upstream.stop()
    loops = []
    for (kind, concurrency), by in loop_samples.items():
        loops.append(
            {
                "kind": kind,
                "concurrency": concurrency,
                "uvloop": summarize(by["uvloop"]),
                "asyncio": summarize(by["asyncio"]),
                **{
                    f"uvloop_over_asyncio_{k}": v
                    for k, v in paired(by["uvloop"], by["asyncio"]).items()
                },
            }
        )
    return {
        "config": dataclasses.asdict(config),
        "environment": {**env, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "http_clients": clients,
        "event_loops": loops,
    }


def _f(value: float, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "Upstream HTTP client: aiohttp vs httpx against the fake upstream "
        f"(client on CPU {result['placement']['client_cpu']}, loop {cfg['client_loop']}; "
        f"median of {cfg['rounds']} rounds)",
        "  (bare: a minimal asyncio.Protocol keep-alive POST, the least any client can cost; "
        "not a usable client)",
        "",
        f"{'mode':<12}{'conc':>5}  {'client':<8}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU us/req':>12}",
    ]
    for mode, concurrency, _ in MODES:
        by = result["http_clients"][mode]
        for name in CLIENTS:
            s = by[name]
            lines.append(
                f"{mode:<12}{concurrency:>5}  {name:<8}{_f(s['rps'], '8.0f')}"
                f"{_f(s['p50_ms'], '9.2f')}{_f(s['p99_ms'], '9.2f')}"
                f"{_f(s['client_cpu_us_per_request'], '12.0f')}"
            )
        lines.append(
            f"{'':<19}aiohttp/httpx rps {_f(by['aiohttp_over_httpx_rps'], '.2f')}, httpx uses "
            f"x{_f(by['httpx_over_aiohttp_cpu_per_request'], '.2f')} the CPU per request; "
            f"aiohttp x{_f(by['aiohttp_over_bare_cpu_per_request'], '.2f')} the bare reference's"
        )
    lines += [
        "",
        "Gateway event loop: uvloop vs asyncio (gateway on CPU "
        f"{result['placement']['server_cpu']}; median of {cfg['loop_rounds']} rounds)",
        "",
        f"{'call':<14}{'conc':>5}  {'loop':<8}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv us/req':>12}",
    ]
    for cell in result["event_loops"]:
        name = "Complete" if cell["kind"] == "unary" else "StreamComplete"
        for loop in ("asyncio", "uvloop"):
            s = cell[loop]
            lines.append(
                f"{name:<14}{cell['concurrency']:>5}  {loop:<8}{_f(s['rps'], '8.0f')}"
                f"{_f(s['p50_ms'], '9.2f')}{_f(s['p99_ms'], '9.2f')}"
                f"{_f(s['server_cpu_us_per_request'], '12.0f')}"
            )
        lines.append(
            f"{'':<21}uvloop/asyncio rps {_f(cell['uvloop_over_asyncio_rps_ratio'], '.2f')}, "
            f"p50 {cell['uvloop_over_asyncio_p50_added_ms']:+.2f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.client_choice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    config.pin = not args.no_pin
    result = run(config)
    print(format_table(result))
    if args.json:
        from benchmarks.gateway import write_json

        write_json(args.json, {"client_choice": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
