"""What does the OpenAI-compatible HTTP door cost beside the gRPC path? One gateway process with
`openai_http` on, driven in alternating rounds over gRPC (`Complete`, `StreamComplete`) and over
HTTP with OpenAI's JSON (`POST /v1/chat/completions`, plain and `stream: true`), the same prompts
and the same fake upstream. The figure is the server's CPU per call over HTTP against gRPC, from
the same process in the same run. benchmarks/README.md has the figures.

    python -m benchmarks.openai_http [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from benchmarks.harness import ServerProcess, environment, free_port
from benchmarks.load import (
    Rounds,
    Sample,
    Target,
    budget,
    gateways_in_rounds,
    paired,
    summarize,
)


class HttpStub:
    """Closed-loop workers over OpenAI's HTTP API, in load.drive's terms."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def drive(
        self,
        kind: str,
        concurrency: int,
        *,
        duration: float,
        max_requests: int | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Sample:
        latencies: list[float] = []
        counts = {"errors": 0, "messages": 0}
        first_error = ""
        clock = time.perf_counter
        headers = dict(metadata)
        more = budget(duration, max_requests)

        async def worker(w: int) -> None:
            nonlocal first_error
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": f"benchmark worker {w}: say hello"}],
                **({"stream": True} if kind == "stream" else {}),
            }
            while more():
                t0 = clock()
                try:
                    async with self.session.post(self.url, json=body, headers=headers) as r:
                        if r.status != 200:
                            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")
                        received = 0
                        if kind == "stream":
                            async for line in r.content:
                                if line.startswith(b"data: "):
                                    received += 1
                        else:
                            await r.read()
                            received = 1
                except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
                    counts["errors"] += 1
                    first_error = first_error or str(exc)
                    continue
                latencies.append(clock() - t0)
                counts["messages"] += received

        cpu0 = time.process_time()
        start = clock()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return Sample(
            requests=len(latencies),
            errors=counts["errors"],
            elapsed=clock() - start,
            messages=counts["messages"],
            latencies=latencies,
            client_cpu=time.process_time() - cpu0,
            first_error=first_error,
        )


@dataclasses.dataclass
class HttpTarget(Target):
    """The same gateway process, reached over its OpenAI-compatible HTTP port."""

    http_port: int = 0
    session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=10)
        )
        url = f"http://127.0.0.1:{self.http_port}/v1/chat/completions"
        self.stub = HttpStub(self.session, url)  # type: ignore[assignment]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


@dataclasses.dataclass
class Config:
    rounds: int = 5
    duration: float = 1.2
    warmup: float = 0.1
    cells: tuple[tuple[str, int], ...] = (("unary", 16), ("stream", 16))
    max_requests: int | None = None
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=1, duration=0.4, warmup=0.05)


def run(config: Config) -> dict[str, Any]:
    port = free_port()

    def targets(servers: Sequence[ServerProcess]) -> list[Target]:
        [server] = servers
        return [Target("grpc", server), HttpTarget("http", server, http_port=port)]

    door = {"openai_http": {"enabled": True, "address": f"127.0.0.1:{port}"}}
    samples, (server_cpu, client_cpu) = gateways_in_rounds(
        {"gateway": {"overrides": door}},
        Rounds(
            config.cells, config.rounds, config.duration, config.warmup, config.warmup,
            config.max_requests,
        ),
        pin=config.pin,
        targets=targets,
    )  # fmt: skip
    cells = []
    for (kind, concurrency), by in samples.items():
        cell: dict[str, Any] = {"kind": kind, "concurrency": concurrency}
        cell.update({name: summarize(by[name]) for name in ("grpc", "http")})
        cell["http_over_grpc"] = paired(by["http"], by["grpc"])
        cells.append(cell)
    return {
        "config": dataclasses.asdict(config),
        "environment": environment(),
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        "OpenAI-compatible HTTP vs gRPC, one gateway process "
        f"(median of {result['config']['rounds']} rounds)",
        "",
        f"{'call':<16}{'conc':>5}  {'door':<6}{'rps':>8}{'p50 ms':>9}{'srv us/req':>12}"
        f"{'cpu/req vs grpc':>17}",
    ]
    for cell in result["cells"]:
        name = "chat" if cell["kind"] == "unary" else "chat, streamed"
        for door in ("grpc", "http"):
            s = cell[door]
            ratio = cell["http_over_grpc"]["cpu_per_request_ratio"] if door == "http" else 1.0
            lines.append(
                f"{name:<16}{cell['concurrency']:>5}  {door:<6}{s['rps']:>8.0f}"
                f"{s['p50_ms']:>9.2f}{s['server_cpu_us_per_request']:>12.0f}{ratio:>17.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openai_http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    if args.rounds:
        config = dataclasses.replace(config, rounds=args.rounds)
    if args.no_pin:
        config = dataclasses.replace(config, pin=False)
    result = run(config)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
