"""What does a response cache hit cost, against a miss? The same gateway with the cache off;
with it on and every call a miss (in-process: a store bounded at 0 bytes keeps nothing; Redis:
an entry too big to store, so every GET finds nothing), so each call looks up, asks the upstream
and makes its entry;
and with it on and every call a hit (each worker repeats its request, so after its first call
every one is answered from the cache), in this process and in a real redis-server (there with
the replica's near copies, the default, and without them: every hit a GET). The load
sends sampled requests, so the cache is told to store those (`sampled: true`). Each runs in its
own process pinned to the server CPU, driven in alternating rounds like benchmarks/gateway.py;
a second cache-off process is the A/A control, and the bare grpc floor runs beside them.

The figures: server CPU per call of a hit against a miss (the aim: a hit costs at most half a
miss), and the latency a hit adds over the bare grpc floor (p50, same run).

    python -m benchmarks.cache [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from benchmarks.admission import redis_server
from benchmarks.harness import environment
from benchmarks.load import Rounds, gateways_in_rounds, paired, summarize
from benchmarks.report import figure as _f

BASELINE = "cache_off"
AIM = 0.5  # a hit's CPU per call over a miss's, at most


def variants(redis_url: str) -> dict[str, dict[str, Any]]:
    """name -> config overrides of the benchmark gateway (benchmarks/harness.py)."""
    on = {"models": {"*": {}}, "sampled": True}
    redis = {**on, "backend": "redis", "redis_url": redis_url, "redis_timeout": 1.0}
    return {
        BASELINE: {},
        "cache_off_again": {},
        "miss_local": {"cache": {**on, "max_bytes": 0}},
        "hit_local": {"cache": on},
        # Every call a miss in Redis: a real GET that finds nothing, the entry encoded and found
        # too big to SET. (Entries that expire at once are not misses: a worker repeats its
        # request within the millisecond.) A real miss also pays one SET, so the hit/miss
        # ratio measured here is on the high side.
        # Its own key prefix: hit_redis's entries in the same redis-server would answer it.
        "miss_redis": {"cache": {**redis, "max_entry_bytes": 1, "key_prefix": "hapax:miss:"}},
        # A hit repeated on one replica is answered by its near copy (near_ttl, the default);
        # hit_redis_far asks Redis for every hit, as a replica that did not see the entry does.
        "hit_redis": {"cache": redis},
        "hit_redis_far": {"cache": {**redis, "near_ttl": 0, "key_prefix": "hapax:far:"}},
    }


VARIANTS = tuple(variants("redis://127.0.0.1:1/0"))
PAIRS = (("hit_local", "miss_local"), ("hit_redis", "miss_redis"), ("hit_redis_far", "miss_redis"))


@dataclasses.dataclass
class Config:
    rounds: int = 5
    duration: float = 1.2
    warmup: float = 0.1
    cells: tuple[tuple[str, int], ...] = (("unary", 16), ("stream", 16), ("unary", 1))
    max_requests: int | None = None
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=1, duration=0.4, warmup=0.05, cells=(("unary", 16), ("stream", 16)))


def run(config: Config) -> dict[str, Any]:
    with redis_server() as url:
        return _run(config, url)


def _run(config: Config, redis_url: str) -> dict[str, Any]:
    env = environment()
    samples, (server_cpu, client_cpu) = gateways_in_rounds(
        {name: {"overrides": overrides} for name, overrides in variants(redis_url).items()},
        Rounds(
            config.cells, config.rounds, config.duration, config.warmup, config.warmup,
            config.max_requests,
        ),
        pin=config.pin,
        floor=True,
    )  # fmt: skip
    cells = []
    for (kind, concurrency), by in samples.items():
        cell: dict[str, Any] = {"kind": kind, "concurrency": concurrency}
        cell.update({name: summarize(by[name]) for name in (*VARIANTS, "floor")})
        for name in VARIANTS:
            if name != BASELINE:
                cell[f"{name}_over_{BASELINE}"] = paired(by[name], by[BASELINE])
        for hit, miss in PAIRS:
            cell[f"{hit}_over_{miss}"] = paired(by[hit], by[miss])
            cell[f"{hit}_p50_over_floor_ms"] = cell[hit]["p50_ms"] - cell["floor"]["p50_ms"]
        cells.append(cell)
    return {
        "config": dataclasses.asdict(config),
        "aim_hit_over_miss": AIM,
        "environment": {**env, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"Response cache: hits and misses vs the cache off (gateway on CPU "
        f"{result['placement']['server_cpu']}; median of {result['config']['rounds']} rounds)",
        "",
        f"{'call':<14}{'conc':>5}  {'variant':<16}{'rps':>8}{'p50 ms':>9}{'srv us/req':>12}"
        f"{'cpu/req vs off':>16}",
    ]
    for cell in result["cells"]:
        name = "Complete" if cell["kind"] == "unary" else "StreamComplete"
        for variant in (*VARIANTS, "floor"):
            s = cell[variant]
            ratio = cell.get(f"{variant}_over_{BASELINE}", {}).get("cpu_per_request_ratio")
            lines.append(
                f"{name:<14}{cell['concurrency']:>5}  {variant:<16}{_f(s['rps'], '8.0f')}"
                f"{_f(s['p50_ms'], '9.2f')}{_f(s['server_cpu_us_per_request'], '12.0f')}"
                f"{_f(ratio, '.3f'):>16}"
            )
        for hit, miss in PAIRS:
            ratio = cell[f"{hit}_over_{miss}"].get("cpu_per_request_ratio")
            added = cell[f"{hit}_p50_over_floor_ms"]
            lines.append(
                f"{'':<21}{hit} / {miss}: CPU per call x{_f(ratio, '.3f')} (aim <= {AIM}); "
                f"p50 over the bare grpc floor {_f(added, '.3f')} ms"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cache",
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

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
