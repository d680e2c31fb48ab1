"""`python -m benchmarks` (what `make bench` runs): each question's file in turn: the gateway
against the floor (gateway.py), uvloop against asyncio (event_loops.py), the circuit breaker's
window (breaker_window.py), 10,000 open streams (streams.py), what admission costs
(admission.py), then the usage ledger's rows per second and usage query (ledger.py). About 5
minutes; `--quick` for a ~1 min smoke run."""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import admission, breaker_window, event_loops, gateway, ledger, report, streams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    gateway.add_arguments(parser)
    parser.add_argument(
        "--only",
        choices=("gateway", "event-loops", "breaker-window", "streams", "admission", "ledger"),
        help="run one of the benchmarks",
    )
    args = parser.parse_args(argv)
    results = {}
    began = time.perf_counter()
    if args.only in (None, "gateway"):
        results["gateway"] = gateway.run(gateway.config_from(args), verbose=args.verbose)
        print(gateway.format_table(results["gateway"]), flush=True)
    if args.only in (None, "event-loops"):
        config = event_loops.Config.quick() if args.quick else event_loops.Config()
        config.pin = not args.no_pin
        results["event_loops"] = event_loops.run(config)
        if "gateway" in results:
            print()
        print(event_loops.format_table(results["event_loops"]), flush=True)
    if args.only in (None, "breaker-window"):
        window = breaker_window.Config.quick() if args.quick else breaker_window.Config()
        results["breaker_window"] = breaker_window.run(window)
        if len(results) > 1:
            print()
        print(breaker_window.format_table(results["breaker_window"]), flush=True)
    if args.only in (None, "streams"):
        held = streams.Config.quick() if args.quick else streams.Config()
        held.loop, held.pin = args.loop, not args.no_pin
        results["streams"] = streams.run(held)
        if len(results) > 1:
            print()
        print(streams.format_table(results["streams"]), flush=True)
    if args.only in (None, "admission"):
        door = admission.Config.quick() if args.quick else admission.Config()
        door.pin = not args.no_pin
        results["admission"] = admission.run(door)
        if len(results) > 1:
            print()
        print(admission.format_table(results["admission"]), flush=True)
    if args.only in (None, "ledger"):
        rows = ledger.Config.quick() if args.quick else ledger.Config()
        results["ledger"] = ledger.run(rows)
        if len(results) > 1:
            print()
        print(ledger.format_table(results["ledger"]), flush=True)
    print(f"\n(benchmarks took {time.perf_counter() - began:.0f} s)")
    if args.json:
        report.write_json(args.json, results)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
