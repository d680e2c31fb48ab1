"""What writing a row per call costs the gateway: its server CPU per call with the usage ledger
on against off (`ledger.enabled: false`), with an A/A control (a second, identical ledger-on
gateway: what two gateways differ by for nothing), on SQLite or on PostgreSQL.

Three gateway processes, driven as benchmarks.compare drives its variants (pinned, alternating
rounds, each figure the median of the rounds and each ratio the median of round-by-round
ratios). `--backend postgres` starts a real PostgreSQL server on loopback
(benchmarks/postgres_server.py: fsync on, as in production, unless `--no-fsync`; its processes
kept off the gateway's CPU) and gives each ledger-on gateway a database of its own; the rows
found there once the gateways have stopped are reported, so a ledger that spooled instead of
writing cannot pass for one that wrote.

    python -m benchmarks.ledger_cost --backend postgres --rounds 9 --cell unary:16 --cell stream:16

About 2 minutes with those 9 rounds. Nothing of hapaxd is imported here: the gateways' processes
import it (from `--source`, a directory holding hapaxd/, if given).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any

from benchmarks.harness import cpu_plan
from benchmarks.load import Cell, Rounds, gateways_in_rounds, paired, summarize
from benchmarks.postgres_server import PostgresMissing, PostgresServer

VARIANTS = ("ledger_on", "ledger_off", "ledger_on_again")  # the first is the base
BACKENDS = ("sqlite", "postgres")


@dataclasses.dataclass
class Config:
    backend: str = "sqlite"
    cells: tuple[Cell, ...] = (("unary", 16), ("stream", 16))
    rounds: int = 9
    duration: float = 1.5
    warmup: float = 0.15
    initial_warmup: float = 0.5
    max_requests: int | None = None  # a round's calls instead of its duration (smoke tests)
    pin: bool = True
    loop: str = "uvloop"
    durable: bool = True  # the PostgreSQL server with fsync, as in production
    source: str = ""  # a directory holding the hapaxd/ to run ("": the one installed)


def run(config: Config) -> dict[str, Any]:
    """The gateway's server CPU per call with the ledger on, off, and on again (A/A), on
    `config.backend`; each cell's medians, and off and on-again against on, round by round."""
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; use one of {BACKENDS}")
    server: PostgresServer | None = None
    databases: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {name: {} for name in VARIANTS}
    overrides["ledger_off"] = {"ledger": {"enabled": False}}
    found: dict[str, Any] = {}
    try:
        if config.backend == "postgres":
            gateway_cpu, _ = cpu_plan(config.pin)
            others = set(os.sched_getaffinity(0)) - {gateway_cpu}
            server = PostgresServer(durable=config.durable, cpus=others or None)
            server.start()
            for name in ("ledger_on", "ledger_on_again"):
                databases[name] = server.create_database(name)
                overrides[name] = {
                    "ledger": {"backend": "postgres", "postgres_url": databases[name]}
                }
        samples, (server_cpu, client_cpu) = gateways_in_rounds(
            {name: {"source": config.source, "overrides": overrides[name]} for name in VARIANTS},
            Rounds(
                config.cells,
                config.rounds,
                config.duration,
                warmup=config.warmup,
                initial_warmup=config.initial_warmup,
                max_requests=config.max_requests,
            ),
            pin=config.pin,
            loop=config.loop,
        )
        if server is not None:  # the gateways have stopped: their ledgers are written
            found = {"postgres": server_version(databases["ledger_on"])}
            found["rows_written"] = {name: rows_in(dsn) for name, dsn in databases.items()}
    finally:
        if server is not None:
            server.remove()
    cells = []
    for (kind, concurrency), by_variant in samples.items():
        base = by_variant["ledger_on"]
        cell: dict[str, Any] = {"kind": kind, "concurrency": concurrency}
        cell.update({name: summarize(by_variant[name]) for name in VARIANTS})
        cell["off_over_on"] = paired(by_variant["ledger_off"], base)
        cell["on_again_over_on"] = paired(by_variant["ledger_on_again"], base)
        cells.append(cell)
    requests = {
        name: sum(cell[name]["requests"] for cell in cells)
        for name in ("ledger_on", "ledger_on_again")
    }
    return {
        "backend": config.backend,
        "source": config.source or "installed",
        "fsync": config.durable if config.backend == "postgres" else None,
        "rounds": config.rounds,
        "pinned": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
        "requests_measured": requests,
        **found,
    }


def rows_in(dsn: str) -> int:
    """The rows in a ledger's PostgreSQL database."""
    import psycopg

    with psycopg.connect(dsn) as db:
        found = db.execute("SELECT COUNT(*) FROM calls").fetchone()
    return int(found[0]) if found else 0


def server_version(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn) as db:
        version = db.info.server_version
    return f"{version // 10000}.{version % 10000}"


def format_table(result: dict[str, Any]) -> str:
    if result["backend"] == "postgres":
        where = (
            f"PostgreSQL {result.get('postgres', '?')} on loopback, fsync "
            f"{'on' if result['fsync'] else 'off'}"
        )
    else:
        where = "SQLite (WAL)"
    lines = [
        f"Usage ledger, its cost per call: {where}; gateway CPU per call (us), median of "
        f"{result['rounds']} alternating rounds",
        "",
        f"  {'cell':<12}{'ledger on':>11}{'ledger off':>12}{'off / on':>10}{'on cost':>10}"
        f"{'A/A':>9}{'A/A rps':>9}",
    ]
    for cell in result["cells"]:
        on, off = cell["ledger_on"], cell["ledger_off"]
        ratio = cell["off_over_on"]["cpu_per_request_ratio"]
        control = cell["on_again_over_on"]
        lines.append(
            f"  {cell['kind'] + ':' + str(cell['concurrency']):<12}"
            f"{_us(on['server_cpu_us_per_request']):>11}{_us(off['server_cpu_us_per_request']):>12}"
            f"{'x' + format(ratio, '.3f'):>10}{_cost(ratio):>10}"
            f"{'x' + format(control['cpu_per_request_ratio'], '.3f'):>9}"
            f"{'x' + format(control['rps_ratio'], '.3f'):>9}"
        )
        for name in VARIANTS:
            if cell[name]["errors"]:
                lines.append(
                    f"    {name}: {cell[name]['errors']} errors: {cell[name].get('first_error')}"
                )
    if "rows_written" in result:
        written = ", ".join(f"{n} {c:,}" for n, c in result["rows_written"].items())
        lines += [
            "",
            f"  rows in the databases afterwards: {written} (calls measured: "
            + ", ".join(f"{n} {c:,}" for n, c in result["requests_measured"].items())
            + ")",
        ]
    lines += [
        "",
        "  off / on: CPU per call with the ledger off over on, round by round (on cost: what the "
        "ledger adds);",
        "  A/A: the second ledger-on gateway over the first (the noise).",
    ]
    return "\n".join(lines)


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _cost(off_over_on: float) -> str:
    """What the ledger adds to a call's CPU, from off/on."""
    if math.isnan(off_over_on) or off_over_on <= 0:
        return "-"
    return f"{(1 / off_over_on - 1) * 100:+.1f}%"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.compare import parse_cell

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    parser.add_argument(
        "--cell", type=parse_cell, action="append", help="default unary:16 stream:16"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds a round")
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    parser.add_argument("--source", default="", help="a directory holding the hapaxd/ to run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    config = Config(
        backend=args.backend,
        cells=tuple(args.cell or Config.cells),
        rounds=args.rounds,
        duration=args.duration,
        pin=not args.no_pin,
        durable=not args.no_fsync,
        source=args.source,
    )
    try:
        result = run(config)
    except PostgresMissing as missing:
        print(missing, file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"ledger_cost": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
