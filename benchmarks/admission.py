"""What does admission cost? The same gateway with auth off and with auth on (a ring of 20 API
keys, the caller's the last; every digest is compared on every call), each in its own process
pinned to the server CPU, driven in alternating rounds like benchmarks/gateway.py, every call
carrying the same `authorization: Bearer` key. A second auth-off process is the A/A control: the
spread between the two identical servers is the noise this run can resolve. The figure is the
server's CPU per call, on against off. benchmarks/README.md has the figures.

    python -m benchmarks.admission [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
from typing import Any

from benchmarks.harness import ServerProcess, cpu_plan, environment, pinned, run_loop, started
from benchmarks.load import Target, alternate, paired, summarize
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


# name -> config overrides of the benchmark gateway (benchmarks/harness.py gateway_settings)
VARIANTS: dict[str, dict[str, Any]] = {
    BASELINE: {},
    "auth_off_again": {},
    "auth_on": {"auth": {"enabled": True, "keys": _keys(KEY_COUNT)}},
}


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


class _Context:
    """What the door reads of a servicer context: the invocation metadata."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def check_cost(key_counts: tuple[int, ...] = (1, 20, 200), calls: int = 20_000) -> dict[int, float]:
    """Microseconds one key check takes in-process (read the metadata, hash, compare with every
    digest), by the number of configured keys; the caller's key is the last."""
    import time

    from hapaxd import config as hapax_config
    from hapaxd.admission.keys import KeyRing
    from hapaxd.api.admission import Door

    found = {}
    context = _Context((("x-request-id", "r1"), ("authorization", f"Bearer {KEY}")))
    for count in key_counts:
        auth = hapax_config.AuthSettings(keys=_keys(count))
        door = Door(auth, KeyRing(auth.keys))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                door.check(context, "any_key", "/hapax.v1.CompletionService/Complete")  # type: ignore[arg-type]
            best = min(best, (time.perf_counter() - started) / calls)
        found[count] = best * 1e6
    return found


def run(config: Config) -> dict[str, Any]:
    env = environment()
    per_check = check_cost()
    server_cpu, client_cpu = cpu_plan(config.pin)
    with pinned(client_cpu):
        upstream = ServerProcess("upstream", "upstream", cpu=client_cpu, loop="uvloop")
        upstream.wait_ready()
        try:
            servers = [
                ServerProcess(
                    name,
                    "gateway",
                    cpu=server_cpu,
                    upstream_port=upstream.port,
                    overrides=overrides,
                )
                for name, overrides in VARIANTS.items()
            ]
            with started(servers):
                samples = run_loop(
                    "uvloop",
                    alternate(
                        [
                            Target(s.name, s, metadata=(("authorization", f"Bearer {KEY}"),))
                            for s in servers
                        ],
                        list(config.cells),
                        rounds=config.rounds,
                        duration=config.duration,
                        warmup=config.warmup,
                        initial_warmup=config.warmup,
                        max_requests=config.max_requests,
                        upstream=upstream,
                    ),
                )
        finally:
            upstream.stop()
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
        "check_us_by_key_count": per_check,
        "environment": {**env, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "placement": {"server_cpu": server_cpu, "client_cpu": client_cpu},
        "cells": cells,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"Admission cost: auth on ({result['keys']} keys) vs off (gateway on CPU "
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
