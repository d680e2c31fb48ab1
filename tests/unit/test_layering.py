"""The import direction, by folder: every module of server/hapaxd is checked (an ast walk of its
source), so a module is covered the day it is added.

    config/         imports nothing else of hapaxd
    core/           config and core only; no grpc, protobuf, HTTP client, prometheus or otel
    providers/      core, config, providers; no grpc, protobuf, prometheus or otel
    admission/      config, core, admission; no grpc, protobuf, HTTP client, prometheus or otel
    tls/            config and tls only: certificates for every listener; no grpc, protobuf,
                    HTTP library, prometheus or otel
    cache/          the response cache: config, core, admission, cache; no grpc, protobuf,
                    HTTP library, prometheus or otel
    calls/          the call pipeline both doors share: config, core, admission, cache, calls;
                    no grpc, protobuf, HTTP library, prometheus or otel
    observability/  config, core, admission, calls, tls, observability; never a door (api/,
                    openai_http/) nor the adapters
    api/            the gRPC door: config, core, admission, calls, tls, observability, api; no
                    HTTP library
    openai_http/    the HTTP door: config, core, admission, calls, tls, observability,
                    openai_http; never the gRPC door: no api/, grpc, protobuf or stubs
    workers/        serve --workers: config, observability (the side port), app (a worker
                    runs the whole gateway), workers; no grpc of its own: the supervisor
                    builds no grpc object (its workers are exec'd, not forked)
    app.py, __main__.py   anything: the one place that wires the parts
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "server" / "hapaxd"
GRPC = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "google.rpc", "google.protobuf")
STUBS = ("hapax",)
HTTP = ("aiohttp", "httpx")
TELEMETRY = ("prometheus_client", "opentelemetry")
# folder -> (hapaxd packages it may import, third-party prefixes it must not import)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "config": (("config",), GRPC + STUBS + HTTP + TELEMETRY),
    "core": (("config", "core"), GRPC + STUBS + HTTP + TELEMETRY),
    "costs": (("core", "costs"), GRPC + STUBS + HTTP + TELEMETRY),
    "ledger": (("ledger",), GRPC + STUBS + HTTP + TELEMETRY),
    "providers": (("config", "core", "providers"), GRPC + STUBS + TELEMETRY),
    "admission": (("config", "core", "admission"), GRPC + STUBS + HTTP + TELEMETRY),
    "tls": (("config", "tls"), GRPC + STUBS + HTTP + TELEMETRY),
    "cache": (("config", "core", "admission", "cache"), GRPC + STUBS + HTTP + TELEMETRY),
    "calls": (
        ("config", "core", "costs", "admission", "cache", "calls"),
        GRPC + STUBS + HTTP + TELEMETRY,
    ),
    "observability": (
        ("config", "core", "costs", "ledger", "admission", "calls", "tls", "observability"),
        (),
    ),
    "api": (
        (
            "config",
            "core",
            "costs",
            "ledger",
            "admission",
            "calls",
            "tls",
            "observability",
            "api",
        ),
        HTTP + TELEMETRY,
    ),
    "openai_http": (
        ("config", "core", "costs", "admission", "calls", "tls", "observability", "openai_http"),
        GRPC + STUBS + TELEMETRY,
    ),
    "workers": (("config", "observability", "app", "workers"), GRPC + STUBS),
}
TOP_LEVEL = {"__init__.py", "__main__.py", "app.py"}


def imported(source: str) -> set[str]:
    """Absolute module names a module's source imports (hapaxd's own by their full name)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hapaxd":  # from hapaxd import config
                found.update(f"hapaxd.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def violations(folder: str, source: str) -> list[str]:
    allowed, banned = RULES[folder]
    bad = []
    for name in sorted(imported(source)):
        if name == "hapaxd" or name.startswith("hapaxd."):
            package = name.split(".")[1] if "." in name else ""
            if package not in allowed:
                bad.append(name)
        elif any(name == p or name.startswith(p + ".") for p in banned):
            bad.append(name)
    return bad


def modules() -> list[tuple[str, pathlib.Path]]:
    return sorted(
        (path.relative_to(PACKAGE).parts[0], path)
        for path in PACKAGE.rglob("*.py")
        if len(path.relative_to(PACKAGE).parts) > 1
    )


def test_every_module_sits_in_a_layer_folder() -> None:
    strays = [str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*.py") if p.name not in TOP_LEVEL]
    folders = {path.relative_to(PACKAGE).parts[0] for _, path in modules()}
    assert strays == []
    assert folders == set(RULES)


@pytest.mark.parametrize(
    ("folder", "path"), modules(), ids=[str(p.relative_to(PACKAGE)) for _, p in modules()]
)
def test_imports_point_inward(folder: str, path: pathlib.Path) -> None:
    assert violations(folder, path.read_text()) == []


def test_the_check_sees_each_kind_of_violation() -> None:
    assert violations("core", "import grpc\n") == ["grpc"]
    assert violations("core", "from hapaxd.api.call import CallRecord\n") == ["hapaxd.api.call"]
    assert violations("core", "from prometheus_client import Counter\n") == ["prometheus_client"]
    assert violations("providers", "from hapax.v1 import x\n") == ["hapax.v1"]
    assert violations("config", "from hapaxd.core import types\n") == ["hapaxd.core"]
    assert violations("config", "from hapaxd import core\n") == ["hapaxd.core"]
    assert violations("api", "import aiohttp\n") == ["aiohttp"]
    assert violations("observability", "from hapaxd.providers import registry\n") == [
        "hapaxd.providers"
    ]
    assert violations("observability", "from hapaxd.api.call import x\n") == ["hapaxd.api.call"]
    assert violations("openai_http", "from hapaxd.api import status\n") == ["hapaxd.api"]
    assert violations("openai_http", "from google.rpc import status_pb2\n") == ["google.rpc"]
    assert violations("calls", "import grpc\n") == ["grpc"]
    assert violations("core", "from hapaxd.core.types import Route\nimport asyncio\n") == []
