"""Complete and StreamComplete through the real gateway against a fast fake OpenAI-compatible
upstream, and the same load against the floor (a bare grpc.aio server answering a constant), in
the same run: requests per second, p50 and p99 latency, and gateway/floor ratios.

    python -m benchmarks.gateway [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any

from benchmarks.harness import (
    LOOPS,
    ServerProcess,
    cpu_plan,
    environment,
    median,
    pinned,
    run_loop,
    started,
)
from benchmarks.load import KINDS, Cell, Sample, Target, alternate, paired, summarize
from benchmarks.report import figure as _f
from benchmarks.report import write_json

# The gateway's performance aims, on one core.
AIM_RPS_RATIO = 0.60  # Complete at 60% or more of the floor's requests per second
AIM_P50_ADDED_MS = 0.3  # no more than 0.3 ms added to the floor's median latency at concurrency 1


@dataclasses.dataclass
class Config:
    rounds: int = 5
    duration: float = 1.2  # seconds per measurement
    warmup: float = 0.15  # seconds at the same cell before each measurement
    initial_warmup: float = 0.5  # seconds per target and cell before the first round
    concurrency: tuple[int, ...] = (1, 16)
    kinds: tuple[str, ...] = KINDS
    max_requests: int | None = None  # per measurement, instead of duration (smoke test)
    loop: str = "uvloop"  # for the servers and the load generator
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=2, duration=0.4, warmup=0.05, initial_warmup=0.2)

    def cells(self) -> list[Cell]:
        return [(kind, c) for kind in self.kinds for c in self.concurrency]


def run(config: Config, *, verbose: bool = False) -> dict[str, Any]:
    """Start the fake upstream, the gateway and the floor in their own processes, run the
    alternating rounds from this process, and return the results (JSON-ready)."""
    env = environment()
    server_cpu, client_cpu = cpu_plan(config.pin)
    with pinned(client_cpu):
        upstream = ServerProcess("upstream", "upstream", cpu=client_cpu, loop=config.loop)
        upstream.wait_ready()
        try:
            gateway = ServerProcess(
                "gateway", "gateway", cpu=server_cpu, loop=config.loop, upstream_port=upstream.port
            )
            floor = ServerProcess("floor", "floor", cpu=server_cpu, loop=config.loop)
            with started([gateway, floor]):
                targets = [Target("gateway", gateway), Target("floor", floor)]
                samples = run_loop(
                    config.loop,
                    alternate(
                        targets,
                        config.cells(),
                        rounds=config.rounds,
                        duration=config.duration,
                        warmup=config.warmup,
                        initial_warmup=config.initial_warmup,
                        max_requests=config.max_requests,
                        upstream=upstream,
                        progress=_progress if verbose else None,
                    ),
                )
                loops = {"gateway": gateway.loop_class, "floor": floor.loop_class}
        finally:
            upstream.stop()
    env["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return _result(config, env, samples, server_cpu, client_cpu, loops)


def _progress(r: int, cell: Cell, name: str, sample: Sample) -> None:
    s = sample.summary()
    print(
        f"  round {r + 1} {cell[0]:>6} c={cell[1]:<3} {name:<8} {s['rps']:8.0f} rps "
        f"p50 {s['p50_ms']:6.2f} ms  server CPU {s['server_cpu_pct']:3.0f}%",
        file=sys.stderr,
    )


def _result(
    config: Config,
    env: dict[str, Any],
    samples: dict[Cell, dict[str, list[Sample]]],
    server_cpu: int | None,
    client_cpu: int | None,
    loops: dict[str, str],
) -> dict[str, Any]:
    cells = []
    for (kind, concurrency), by_target in samples.items():
        cells.append(
            {
                "kind": kind,
                "concurrency": concurrency,
                "gateway": summarize(by_target["gateway"]),
                "floor": summarize(by_target["floor"]),
                **paired(by_target["gateway"], by_target["floor"]),
            }
        )
    result: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "environment": env,
        "placement": {
            "server_under_test_cpu": server_cpu,
            "load_generator_cpu": client_cpu,
            "fake_upstream_cpu": client_cpu,
            "fake_upstream_process": "its own process, next to the load generator",
            "event_loops": loops,
        },
        "cells": cells,
    }
    result["aims"] = aims(result)
    return result


def _cell(result: dict[str, Any], kind: str, concurrency: int) -> dict[str, Any] | None:
    return next(
        (c for c in result["cells"] if c["kind"] == kind and c["concurrency"] == concurrency), None
    )


def aims(result: dict[str, Any]) -> dict[str, Any]:
    """The two aims, judged on Complete (unary): the rps ratio at the highest concurrency
    run (the throughput a core can give), the p50 added at concurrency 1."""
    unary = [c for c in result["cells"] if c["kind"] == "unary"]
    out: dict[str, Any] = {}
    if unary:
        top = max(unary, key=lambda c: c["concurrency"])
        out["complete_rps_ratio"] = {
            "concurrency": top["concurrency"],
            "value": top["rps_ratio"],
            "target": f">= {AIM_RPS_RATIO}",
            "met": bool(top["rps_ratio"] >= AIM_RPS_RATIO),
        }
    one = _cell(result, "unary", 1)
    if one is not None:
        out["complete_p50_added_ms_at_c1"] = {
            "value": one["p50_added_ms"],
            "target": f"<= {AIM_P50_ADDED_MS}",
            "met": bool(one["p50_added_ms"] <= AIM_P50_ADDED_MS),
        }
    return out


def format_table(result: dict[str, Any]) -> str:
    cfg, place = result["config"], result["placement"]
    pin = (
        f"server under test on CPU {place['server_under_test_cpu']}, load generator and fake "
        f"upstream on CPU {place['load_generator_cpu']}"
        if place["server_under_test_cpu"] is not None
        else "not pinned"
    )
    lines = [
        "Gateway vs floor (bare grpc.aio server answering a constant), same run",
        f"  {pin}; loop {cfg['loop']}; median of {cfg['rounds']} alternating rounds of "
        + (f"{cfg['max_requests']} requests" if cfg["max_requests"] else f"{cfg['duration']:g} s")
        + " per cell",
        "",
        f"{'call':<14}{'conc':>5}  {'target':<8}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv CPU':>9}{'srv us/req':>11}{'client CPU':>11}{'upstr CPU':>10}",
    ]
    for cell in result["cells"]:
        name = "Complete" if cell["kind"] == "unary" else "StreamComplete"
        for target in ("floor", "gateway"):
            s = cell[target]
            lines.append(
                f"{name:<14}{cell['concurrency']:>5}  {target:<8}{_f(s['rps'], '9.0f')}"
                f"{_f(s['p50_ms'], '9.2f')}{_f(s['p99_ms'], '9.2f')}"
                f"{_f(s['server_cpu_pct'], '8.0f')}%{_f(s['server_cpu_us_per_request'], '11.0f')}"
                f"{_f(s['client_cpu_pct'], '10.0f')}%"
                + (f"{_f(s['upstream_cpu_pct'], '9.0f')}%" if target == "gateway" else "")
            )
        lines.append(
            f"{'':<21}gateway/floor rps {_f(cell['rps_ratio'], '.2f')}, "
            f"p50 +{_f(cell['p50_added_ms'], '.2f')} ms, "
            f"p99 +{_f(cell['p99_added_ms'], '.2f')} ms, "
            f"server CPU per request x{_f(cell['cpu_per_request_ratio'], '.1f')}"
        )
        if cell["gateway"]["errors"] or cell["floor"]["errors"]:
            lines.append(
                f"{'':<21}ERRORS gateway {cell['gateway']['errors']} floor "
                f"{cell['floor']['errors']}: "
                f"{cell['gateway'].get('first_error') or cell['floor'].get('first_error')}"
            )
    others = [
        c[t]["others_on_server_cpu_pct"]
        for c in result["cells"]
        for t in ("gateway", "floor")
        if not math.isnan(c[t]["others_on_server_cpu_pct"])
    ]
    if others:
        lines.append(
            f"(other processes' load on the server's CPU during measurements: median "
            f"{median(others):.0f}%, worst cell {max(others):.0f}%)"
        )
    lines.append("")
    for key, aim in result["aims"].items():
        verdict = "MET" if aim["met"] else "NOT MET"
        if key == "complete_rps_ratio":
            lines.append(
                f"Aim: Complete rps >= {AIM_RPS_RATIO:.0%} of the floor's (concurrency "
                f"{aim['concurrency']}): {aim['value']:.2f} -> {verdict}"
            )
        else:
            lines.append(
                f"Aim: Complete adds <= {AIM_P50_ADDED_MS} ms to the floor's p50 at concurrency 1: "
                f"+{aim['value']:.2f} ms -> {verdict}"
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5; quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", help="default: 1 16")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every measurement")


def config_from(args: argparse.Namespace) -> Config:
    config = Config.quick() if args.quick else Config()
    if args.rounds:
        config.rounds = args.rounds
    if args.duration:
        config.duration = args.duration
    if args.concurrency:
        config.concurrency = tuple(args.concurrency)
    config.loop = args.loop
    config.pin = not args.no_pin
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(config_from(args), verbose=args.verbose)
    print(format_table(result))
    if args.json:
        write_json(args.json, {"gateway": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
