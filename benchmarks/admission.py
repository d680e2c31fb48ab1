"""What does admission cost? The same gateway with auth off; with auth on (a ring of 20 API
keys, the caller's the last; every digest is compared on every call); with auth and rate limits
(requests and tokens per minute, too high to refuse) in this process; and with the limits in a
real redis-server (one script round trip per admission). Each runs in its own process pinned to
the server CPU, driven in alternating rounds like benchmarks/gateway.py, every call carrying the
same `authorization: Bearer` key. A second auth-off process is the A/A control: the spread
between the two identical servers is the noise this run can resolve. The figure is the server's
CPU per call against auth off. It also times, in-process, one key check by the number of keys
and one Redis admission (client CPU per round trip, with redis-py's own parser and hiredis's
when installed). benchmarks/README.md has the figures.

    python -m benchmarks.admission [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import environment
from benchmarks.load import Rounds, gateways_in_rounds, paired, summarize
from benchmarks.report import figure as _f

KEY = "hpx_benchmark-caller-key-0123456789"
KEY_COUNT = 20
BASELINE = "auth_off"


def _keys(count: int) -> list[dict[str, Any]]:
    others = [
        {"id": f"other-{i}", "sha256": hashlib.sha256(f"hpx_other-{i}".encode()).hexdigest()}
        for i in range(count - 1)
    ]
    return [*others, {"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]


def _limited(count: int) -> list[dict[str, Any]]:
    """The keys with limits no benchmark reaches, so every call is admitted after the check."""
    return [
        {**key, "requests_per_minute": 10**9, "tokens_per_minute": 10**12} for key in _keys(count)
    ]


def variants(redis_url: str) -> dict[str, dict[str, Any]]:
    """name -> config overrides of the benchmark gateway (benchmarks/harness.py)."""
    auth = {"enabled": True, "keys": _keys(KEY_COUNT)}
    limited = {"enabled": True, "keys": _limited(KEY_COUNT)}
    return {
        BASELINE: {},
        "auth_off_again": {},
        "auth_on": {"auth": auth},
        "limits_local": {"auth": limited},
        "limits_redis": {
            "auth": limited,
            "rate_limit": {"backend": "redis", "redis_url": redis_url, "redis_timeout": 1.0},
        },
    }


VARIANTS = tuple(variants("redis://127.0.0.1:1/0"))


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


def check_cost(key_counts: tuple[int, ...] = (1, 20, 200), calls: int = 20_000) -> dict[int, float]:
    """Microseconds one key check takes in-process (open the call's record from its metadata,
    read the key, hash, compare with every digest), by the number of configured keys; the
    caller's key is the last."""
    import time

    from hapaxd import config as hapax_config
    from hapaxd.admission.keys import KeyRing
    from hapaxd.calls.door import verify
    from hapaxd.calls.record import open_record

    found = {}
    headers = (("x-request-id", "r1"), ("authorization", f"Bearer {KEY}"))
    for count in key_counts:
        auth = hapax_config.AuthSettings(keys=_keys(count))
        keys = KeyRing(auth.keys)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                record = open_record("Complete", headers)
                verify(keys, record, "any_key", "/hapax.v1.CompletionService/Complete")
            best = min(best, (time.perf_counter() - started) / calls)
        found[count] = best * 1e6
    return found


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port, nothing persisted; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server; make tools)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def redis_cost(url: str, calls: int = 3000) -> dict[str, float]:
    """Client CPU (this process) per admission against Redis, sequential, by response parser."""
    import asyncio

    import redis.asyncio.connection as connection

    from hapaxd import config as hapax_config
    from hapaxd.admission.limits import Ask
    from hapaxd.admission.redis_store import RedisStore

    parsers: dict[str, Any] = {"resp2": connection._AsyncRESP2Parser}
    if connection.HIREDIS_AVAILABLE:
        parsers["hiredis"] = connection._AsyncHiredisParser

    async def measure(parser: Any) -> float:
        settings = hapax_config.RateLimitSettings(backend="redis", redis_url=url, redis_timeout=1)
        store = RedisStore(settings)
        store._client.connection_pool.connection_kwargs["parser_class"] = parser
        try:
            for _ in range(200):
                await store.take(Ask("warm", 10**9, 10**12, 10))
            best = float("inf")
            for _ in range(3):
                cpu = time.process_time()
                for _ in range(calls):
                    await store.take(Ask("bench", 10**9, 10**12, 10))
                best = min(best, (time.process_time() - cpu) / calls)
            return best * 1e6
        finally:
            await store.aclose()

    return {name: asyncio.run(measure(parser)) for name, parser in parsers.items()}


def run(config: Config) -> dict[str, Any]:
    per_check = check_cost()
    with redis_server() as url:
        per_admission = redis_cost(url)
        result = _run(config, url)
    return {**result, "check_us_by_key_count": per_check, "redis_admission_us": per_admission}


def _run(config: Config, redis_url: str) -> dict[str, Any]:
    env = environment()
    samples, (server_cpu, client_cpu) = gateways_in_rounds(
        {name: {"overrides": overrides} for name, overrides in variants(redis_url).items()},
        Rounds(
            config.cells, config.rounds, config.duration, config.warmup, config.warmup,
            config.max_requests,
        ),
        pin=config.pin,
        metadata=(("authorization", f"Bearer {KEY}"),),
    )  # fmt: skip
    cells = []
    for (kind, concurrency), by in samples.items():
        cell: dict[str, Any] = {"kind": kind, "concurrency": concurrency}
        cell.update({name: summarize(by[name]) for name in VARIANTS})
        for name in VARIANTS:
            if name != BASELINE:
                cell[f"{name}_over_{BASELINE}"] = paired(by[name], by[BASELINE])
        cells.append(cell)
    return {
        "config": dataclasses.asdict(config),
        "keys": KEY_COUNT,
        "environment": {**env, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"Admission cost: auth and limits ({result['keys']} keys) vs auth off (gateway on CPU "
        f"{result['placement']['server_cpu']}; median of {result['config']['rounds']} rounds)",
        "",
        f"{'call':<14}{'conc':>5}  {'variant':<16}{'rps':>8}{'p50 ms':>9}{'srv us/req':>12}"
        f"{'cpu/req vs off':>16}",
    ]
    for cell in result["cells"]:
        name = "Complete" if cell["kind"] == "unary" else "StreamComplete"
        for variant in VARIANTS:
            s = cell[variant]
            ratio = cell.get(f"{variant}_over_{BASELINE}", {}).get("cpu_per_request_ratio")
            lines.append(
                f"{name:<14}{cell['concurrency']:>5}  {variant:<16}{_f(s['rps'], '8.0f')}"
                f"{_f(s['p50_ms'], '9.2f')}{_f(s['server_cpu_us_per_request'], '12.0f')}"
                f"{_f(ratio, '.3f'):>16}"
            )
    checks = ", ".join(f"{n} keys {us:.2f} us" for n, us in result["check_us_by_key_count"].items())
    lines += ["", f"One key check in-process (best of 5 x 20,000): {checks}"]
    parsers = ", ".join(f"{name} {us:.0f} us" for name, us in result["redis_admission_us"].items())
    lines.append(f"One Redis admission, client CPU (best of 3 x 3,000, sequential): {parsers}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.admission",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    config.pin = not args.no_pin
    if args.rounds:
        config.rounds = args.rounds
    result = run(config)
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"admission": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
