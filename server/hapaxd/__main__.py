"""Command line: `hapaxd serve [--config FILE]`, `hapaxd check-config FILE`,
`hapaxd healthcheck [ADDRESS]`. Argument parsing only."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hapaxd import config


def _settings(path: str | None) -> config.Settings:
    path = path or os.environ.get("HAPAX_CONFIG")
    return config.load(path) if path else config.default_settings()


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


async def _healthcheck(address: str, wait: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=wait)
        except grpc.aio.AioRpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hapaxd", description="Hapax gRPC LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $HAPAX_CONFIG or built-in)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    health = sub.add_parser("healthcheck", help="ask a running gateway's gRPC health service")
    health.add_argument("address", nargs="?", default="127.0.0.1:50051")
    health.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)

    if args.command == "healthcheck":
        return asyncio.run(_healthcheck(args.address, args.timeout))
    try:
        settings = _settings(args.config if args.command == "serve" else args.file)
    except config.ConfigError as exc:
        print(f"hapaxd: invalid config:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        names = ", ".join(f"{p.name} ({p.type})" for p in settings.providers)
        print(f"config OK: providers {names}; default model {settings.default_model}")
        return 0
    from hapaxd.app import serve as run_server
    from hapaxd.logs import configure_logging

    configure_logging(settings.logging)
    _run(run_server(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
