"""Command line: `hapaxd serve [--config FILE] [--workers N|auto]`,
`hapaxd check-config [--no-secrets] FILE`,
`hapaxd healthcheck [ADDRESS] [--cacert CA [--cert C --key K]]`,
`hapaxd hash-key [--id ID] [--owner TEAM] [--stdin]`, `hapaxd --version`. Argument parsing, and
turning start-up failures an operator can fix into one line and exit status 2. (`hapaxd worker`
is internal: one worker process of `serve --workers`, started by its supervisor.)"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import secrets
import socket
import sys
from collections.abc import Coroutine
from importlib import metadata
from typing import Any, TypeVar

import hapaxd
from hapaxd import config

T = TypeVar("T")

# Errors from bind(2) that an operator fixes in the config or on the host.
_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _version() -> str:
    try:
        return metadata.version("hapax-gateway")
    except metadata.PackageNotFoundError:
        return hapaxd.__version__


def _path(given: str | None) -> str:
    return given or os.environ.get("HAPAX_CONFIG") or ""


def _settings(path: str | None) -> config.Settings:
    path = _path(path)
    return config.load(path) if path else config.default_settings()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _serve(settings: config.Settings, path: str) -> str | None:
    """Run the gateway until a signal stops it; the one line to print if a listener could not
    bind, which an operator fixes without a traceback (App.start stops what it had started)."""
    from hapaxd.app import serve
    from hapaxd.tls.certificates import TlsError

    try:
        await serve(settings, lambda: _settings(path), path)
    except TlsError as exc:
        return str(exc)
    except (OSError, RuntimeError) as exc:
        line = _listen_failure(exc, settings)
        if line is None:
            raise
        return line
    return None


def _why_not_bound(address: str) -> str | None:
    """Why `address` cannot be listened on, found by trying (grpc says only that it failed);
    None if it can be now."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
            probe.bind(where)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None


def _listen_failure(exc: Exception, settings: config.Settings) -> str | None:
    """The one line for a listener that could not bind, or None for any other error."""
    message = str(exc)
    if message.startswith(("cannot listen on", "Failed to bind to address")):
        # App raises the first, grpc's add_insecure_port the second; neither says why.
        address = settings.server.address
        why = _why_not_bound(address)
        return f"cannot listen on {address}" + (f": {why}" if why else "")
    if isinstance(exc, OSError) and exc.errno in _BIND_ERRORS and "bind" in message:
        # socket.create_server for the metrics side port, the only other listener.
        return f"cannot listen on {settings.metrics.address}: {os.strerror(exc.errno).lower()}"
    return None


def _check_tls(settings: config.Settings) -> list[str]:
    """Problems with the TLS files the config names (they are read when serving starts)."""
    from hapaxd.tls.certificates import CertificateFiles, TlsError

    problems = []
    listeners = (
        ("server.tls", settings.server.tls),
        ("metrics.tls", settings.metrics.tls),
        ("openai_http.tls", settings.openai_http.tls),
    )
    for where, tls in listeners:
        if tls is not None:
            try:
                CertificateFiles(tls, where).read()
            except TlsError as exc:
                problems.append(str(exc))
    return problems


def _usage_lines(settings: config.Settings) -> list[str]:
    """Where usage is kept, and what budgets can promise with it."""
    from hapaxd.ledger.paths import ledger_path

    lines = []
    if settings.ledger.enabled:
        lines.append(f"usage ledger: {ledger_path(settings.ledger.path)}")
    else:
        lines.append(
            "usage ledger: off (no usage is kept; UsageService answers FAILED_PRECONDITION)"
        )
    budgets = settings.budgets.limits
    if budgets:
        lines.append(f"budgets: {', '.join(b.name for b in budgets)}")
        if not settings.ledger.enabled:
            lines.append(
                "warning: budgets without the usage ledger start from zero at every restart "
                "(their spend is rebuilt from the ledger)"
            )
        shared = settings.budgets
        if shared.backend == "redis":
            lines.append(
                f"budgets: shared by every replica in Redis at {shared.redis_url}; when it "
                + (
                    "cannot be asked, budgeted calls are refused (on_store_error: closed)"
                    if shared.on_store_error == "closed"
                    else "cannot be asked, budgeted calls are admitted unchecked and charged "
                    "once it answers (on_store_error: open)"
                )
            )
            if settings.ledger.enabled and settings.ledger.backend != "postgres":
                lines.append(
                    "warning: a budget window Redis loses is seeded again from this replica's "
                    "own ledger only; with ledger.backend: postgres it is seeded from all"
                )
        else:
            lines.append(
                "warning: budgets are kept by this gateway process: replicas each keep their "
                "own (budgets.backend: redis shares them)"
            )
    return lines


def _check_config(settings: config.Settings, secrets: bool) -> int:
    problems = _check_tls(settings)
    if problems:
        print("hapaxd: invalid config:\n" + "\n".join(problems), file=sys.stderr)
        return 2
    names = ", ".join(f"{p.name} ({p.type})" for p in settings.providers)
    print(f"config OK: providers {names}; default model {settings.default_model}")
    auth = settings.auth
    if auth.enabled:
        ids = ", ".join(k.id for k in auth.keys)
        print(
            f"auth: {len(auth.keys)} keys ({ids}); reflection {auth.reflection}, "
            f"admin service {auth.admin_service}"
        )
    else:
        print("auth: off (every caller that reaches the port is served)")
    for line in _usage_lines(settings):
        print(line)
    from hapaxd.providers.registry import check_lines

    for line in check_lines(settings.providers, secrets):
        print(line)
    from hapaxd.workers.cores import workers_of
    from hapaxd.workers.sharing import notes

    for line in notes(settings, workers_of(settings.server.workers)):
        print(line)
    if not secrets:
        needed = [
            f"{env} ({key}{'' if os.environ.get(env) else ', not set'})"
            for key, env in settings.secret_env()
        ]
        print(f"secrets not checked; serving needs: {', '.join(needed) or 'none'}")
    return 0


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


async def _healthcheck(
    address: str, wait: float, cacert: str | None, cert: str | None, key: str | None
) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if cacert or cert:
        credentials = grpc.ssl_channel_credentials(_read(cacert), _read(key), _read(cert))
        opened = grpc.aio.secure_channel(address, credentials)
    else:
        opened = grpc.aio.insecure_channel(address)
    async with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=wait)
        except grpc.aio.AioRpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


KEY_PREFIX = "hpx_"


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= 256:
        return int(text)
    raise argparse.ArgumentTypeError("a number of worker processes from 1 to 256, or auto")


def _worker(args: argparse.Namespace) -> int:
    """One worker of `serve --workers` (workers/worker.py), on the supervisor's ports."""
    from hapaxd.workers.worker import run_worker, worker_settings

    path = _path(args.config)

    def load() -> config.Settings:
        return worker_settings(_settings(path), args.grpc_address, args.http_address)

    async def work() -> str | None:
        from hapaxd.tls.certificates import TlsError

        try:
            await run_worker(load, path, args.index, args.report_fd, args.lifeline_fd)
        except (TlsError, config.ConfigError) as exc:
            return str(exc)
        except (OSError, RuntimeError) as exc:
            line = _listen_failure(exc, load())
            if line is None:
                raise
            return line
        return None

    failure = _run(work())
    if failure is not None:
        print(f"hapaxd worker {args.index}: {failure}", file=sys.stderr)
        return 2
    return 0


def _hash_key(key_id: str | None, owner: str, from_stdin: bool) -> int:
    """Print the `auth.keys` entry for a key to stdout, and a new key (once) to stderr, so that
    `hapaxd hash-key --id team >> keys.yaml` keeps the key out of the file."""
    key_id = key_id or f"key-{secrets.token_hex(4)}"
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,64}", key_id):
        print("hapaxd: --id: 1-64 characters of A-Z a-z 0-9 _ . : @ -", file=sys.stderr)
        return 2
    if from_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            print("hapaxd: no key on stdin", file=sys.stderr)
            return 2
    else:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        print(f"new API key for {key_id} (shown only now; give it to the caller):", file=sys.stderr)
        print(key, file=sys.stderr)
    owner_line = f"\n    owner: {owner}" if owner else ""
    print(f"  - id: {key_id}{owner_line}\n    sha256: {config.digest(key)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hapaxd", description="Hapax gRPC LLM gateway")
    parser.add_argument("--version", action="version", version=f"hapaxd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $HAPAX_CONFIG or built-in)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="worker processes sharing the ports: a number, or auto (one per usable core); "
        "default server.workers, 1",
    )
    # One worker of `serve --workers`, started by its supervisor (workers/supervisor.py).
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("--config")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--grpc-address", required=True)
    worker.add_argument("--http-address", default="")
    worker.add_argument("--report-fd", type=int, required=True)
    worker.add_argument("--lifeline-fd", type=int, required=True)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    check.add_argument(
        "--no-secrets",
        action="store_true",
        help="check all but that the secret environment variables (api_key_env, ...) are set",
    )
    health = sub.add_parser("healthcheck", help="ask a running gateway's gRPC health service")
    health.add_argument("address", nargs="?", default="127.0.0.1:50051")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument("--cacert", help="TLS: the CA that signed the gateway's certificate")
    health.add_argument("--cert", help="mutual TLS: this client's certificate (PEM)")
    health.add_argument("--key", help="mutual TLS: this client's private key (PEM)")
    hash_key = sub.add_parser(
        "hash-key", help="make an API key and print its auth.keys entry (the key goes to stderr)"
    )
    hash_key.add_argument("--id", help="the key id (default: key-<random>)")
    hash_key.add_argument("--owner", default="", help="the owning team, a label")
    hash_key.add_argument(
        "--stdin", action="store_true", help="hash the key read from stdin instead of a new one"
    )
    args = parser.parse_args(argv)

    if args.command == "hash-key":
        return _hash_key(args.id, args.owner, args.stdin)

    if args.command == "healthcheck":
        return asyncio.run(
            _healthcheck(args.address, args.timeout, args.cacert, args.cert, args.key)
        )
    try:
        if args.command == "check-config":
            settings = config.load(args.file, secrets=not args.no_secrets)
        else:
            settings = _settings(args.config)
    except config.ConfigError as exc:
        print(f"hapaxd: invalid config:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings, secrets=not args.no_secrets)
    from hapaxd.observability.log_format import configure_logging

    configure_logging(settings.logging)
    if args.command == "worker":
        return _worker(args)
    from hapaxd.workers.cores import workers_of

    count = workers_of(args.workers or settings.server.workers)
    if count > 1:
        from hapaxd.workers.supervisor import Supervisor

        failure = asyncio.run(Supervisor(settings, _path(args.config), count).run())
    else:
        failure = _run(_serve(settings, _path(args.config)))
    if failure is not None:
        print(f"hapaxd: {failure}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
