"""How many Python function calls does one call cost? Client and gateway in one process under
cProfile, one OpenAI-compatible upstream (the fast fake), for each source tree given: a count
that the machine's noise does not move, to read beside `benchmarks.compare`'s CPU figures when
those are too noisy to show a small change.

    python -m benchmarks.call_count --variant base=/tmp/base/server --variant new=server

Each variant runs in a process of its own with that tree first on the path. It prints the calls
per call for Complete and StreamComplete, and with --top N the functions whose counts differ most
from the first variant's.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pathlib
import pstats
import re
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent


async def _count(calls: int, warmup: int) -> dict[str, Any]:
    import grpc

    from benchmarks import fake_upstream
    from benchmarks.harness import gateway_settings
    from hapax.v1 import completion_service_pb2 as pb
    from hapax.v1 import completion_service_pb2_grpc as pb_grpc
    from hapaxd import config
    from hapaxd.app import App

    runner, port = await fake_upstream.start()
    # The gateway benchmark.compare runs: one openai provider on the fake, auth off.
    app = App(gateway_settings(port), address="127.0.0.1:0")
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    stub = pb_grpc.CompletionServiceStub(channel)
    turn = [pb.Message(role=pb.ROLE_USER, content="Say hello to the benchmark.")]
    result: dict[str, Any] = {"hapaxd": str(pathlib.Path(config.__file__).parent.parent)}
    try:
        for kind in ("unary", "stream"):

            async def one(kind: str = kind) -> None:
                if kind == "unary":
                    await stub.Complete(pb.CompleteRequest(messages=turn, max_tokens=32))
                else:
                    request = pb.StreamCompleteRequest(messages=turn, max_tokens=32)
                    async for _ in stub.StreamComplete(request):
                        pass

            for _ in range(warmup):
                await one()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(calls):
                await one()
            profile.disable()
            stats = pstats.Stats(profile)
            functions: dict[str, float] = {}
            for (file, _, name), (_, ncalls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
                where = file.rsplit("site-packages/", 1)[-1].rsplit("/server/", 1)[-1]
                key = re.sub(r" at 0x[0-9a-f]+", "", f"{where}:{name}")  # one process's addresses
                functions[key] = functions.get(key, 0.0) + ncalls / calls
            result[kind] = {
                "calls_per_call": stats.total_calls / calls,  # type: ignore[attr-defined]
                "functions": functions,
            }
    finally:
        await channel.close()
        await app.stop(grace=0)
        await runner.cleanup()
    return result


def measure(source: str, calls: int, warmup: int) -> dict[str, Any]:
    """Run the count in a process whose path starts with the tree at `source` (its server/)."""
    server = pathlib.Path(source).resolve()
    path = [str(server), str(server.parent / "clients" / "python"), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    code = (
        "import asyncio, json; from benchmarks.call_count import _count; "
        f"print(json.dumps(asyncio.run(_count({calls}, {warmup}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.call_count",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", action="append", required=True, help="NAME=PATH/TO/server")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    for variant in args.variant:
        name, _, source = variant.partition("=")
        results[name] = measure(source, args.calls, args.warmup)
        print(f"{name}: hapaxd from {results[name]['hapaxd']}")
    first = next(iter(results.values()))
    for kind in ("unary", "stream"):
        print(f"\n{kind}: Python function calls per call")
        for name, result in results.items():
            count = result[kind]["calls_per_call"]
            print(f"  {name:12s} {count:8.0f}   x{count / first[kind]['calls_per_call']:.3f}")
            if args.top and result is not first:
                mine, theirs = result[kind]["functions"], first[kind]["functions"]
                moved = {k: mine.get(k, 0) - theirs.get(k, 0) for k in set(mine) | set(theirs)}
                for key, delta in sorted(moved.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
                    print(f"      {delta:+7.1f}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
