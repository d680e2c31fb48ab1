"""Does uvloop pay for itself? The same gateway started under the default asyncio loop and under
uvloop (what `hapaxd serve` uses), each in its own process pinned to the server CPU, driven in
alternating rounds like benchmarks/gateway.py; the fake upstream runs next to the load generator.
benchmarks/README.md has the figures.

    python -m benchmarks.event_loops [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from benchmarks.harness import environment
from benchmarks.load import Rounds, gateways_in_rounds, paired, summarize
from benchmarks.report import figure as _f

LOOPS = ("uvloop", "asyncio")


@dataclasses.dataclass
class Config:
    rounds: int = 3
    duration: float = 1.2
    warmup: float = 0.1
    cells: tuple[tuple[str, int], ...] = (("unary", 1), ("unary", 16), ("stream", 16))
    max_requests: int | None = None
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=1, duration=0.4, warmup=0.05)


def run(config: Config) -> dict[str, Any]:
    env = environment()
    samples, (server_cpu, client_cpu) = gateways_in_rounds(
        {loop: {"loop": loop} for loop in LOOPS},
        Rounds(
            config.cells, config.rounds, config.duration, config.warmup, config.warmup,
            config.max_requests,
        ),
        pin=config.pin,
    )  # fmt: skip
    cells = [
        {
            "kind": kind,
            "concurrency": concurrency,
            **{loop: summarize(by[loop]) for loop in LOOPS},
            **{
                f"uvloop_over_asyncio_{k}": v
                for k, v in paired(by["uvloop"], by["asyncio"]).items()
            },
        }
        for (kind, concurrency), by in samples.items()
    ]
    return {
        "config": dataclasses.asdict(config),
        "environment": {**env, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        "Gateway event loop: uvloop vs asyncio (gateway on CPU "
        f"{result['placement']['server_cpu']}; median of {result['config']['rounds']} rounds)",
        "",
        f"{'call':<14}{'conc':>5}  {'loop':<8}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv us/req':>12}",
    ]
    for cell in result["cells"]:
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
        prog="python -m benchmarks.event_loops",
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
        from benchmarks.report import write_json

        write_json(args.json, {"event_loops": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
