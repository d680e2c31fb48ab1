"""A/B gateway builds: several gateways (each from its own source tree and/or with config
overrides) and the floor, all pinned like benchmarks/gateway.py, driven in alternating rounds;
each variant's figures against the first one's, round by round. For checking a hot-path change
before committing it:

    cp -r server /tmp/try && $EDITOR /tmp/try/hapaxd/...
    python -m benchmarks.compare --variant base=server --variant try=/tmp/try \\
        --variant nodedup=server:dedup.enabled=false --cell unary:16 --cell stream:16

A variant is NAME=SOURCE[:key.path=value,...]: SOURCE is a directory holding hapaxd/; values are
YAML scalars (false, 0.5, text).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import yaml

from benchmarks.load import Rounds, gateways_in_rounds, paired, summarize


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=SOURCE[:key.path=value,...]")
    source, _, sets = rest.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, sets.split(",")):
        path, eq, value = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"{item!r}: use key.path=value")
        node = overrides
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return name, source, overrides


def parse_cell(text: str) -> tuple[str, int]:
    kind, _, concurrency = text.partition(":")
    if kind not in ("unary", "stream") or not concurrency.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: use unary:N or stream:N")
    return kind, int(concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--cell", type=parse_cell, action="append", help="default unary:1 unary:16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    cells = args.cell or [("unary", 1), ("unary", 16)]

    def announce(servers: Any) -> None:
        for server in servers:
            if server.role == "gateway":
                print(f"{server.name}: hapaxd from {server.hapaxd_path}")

    samples, _ = gateways_in_rounds(
        {
            name: {"source": source, "overrides": overrides}
            for name, source, overrides in args.variant
        },
        Rounds(cells, args.rounds, args.duration, warmup=0.15, initial_warmup=0.5),
        loop=args.loop,
        floor=not args.no_floor,
        announce=announce,
    )
    base = args.variant[0][0]
    for (kind, concurrency), by_target in samples.items():
        print(f"\n{kind} at concurrency {concurrency} (median of {args.rounds} rounds)")
        print(f"  {'variant':<16}{'rps':>8}{'p50 ms':>9}{'us/req':>9}   against {base}")
        for name, runs in by_target.items():
            s, p = summarize(runs), paired(runs, by_target[base])
            errors = f"  ERRORS {s['errors']}: {s.get('first_error')}" if s["errors"] else ""
            cpu = s["server_cpu_us_per_request"]
            print(
                f"  {name:<16}{s['rps']:8.0f}{s['p50_ms']:9.2f}"
                f"{'-' if math.isnan(cpu) else format(cpu, '9.0f'):>9}   "
                f"rps x{p['rps_ratio']:.3f}, p50 {p['p50_added_ms']:+.3f} ms, "
                f"CPU/request x{p['cpu_per_request_ratio']:.3f}{errors}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
