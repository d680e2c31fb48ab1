"""The import direction: domain logic imports neither grpc nor the HTTP client (nor metrics or
tracing libraries), and provider adapters never import grpc. Checked on the source with ast,
following hapaxd's own imports transitively."""

from __future__ import annotations

import ast
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "server" / "hapaxd"
DOMAIN = [
    "breaker",
    "callinfo",
    "config",
    "domain",
    "errors",
    "events",
    "gateway",
    "health",
    "router",
    "singleflight",
    "upstreams",
    "validation",
]
TRANSPORT_AND_IO = (
    "grpc",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "google.rpc",
    "google.protobuf",
    "hapax",
    "aiohttp",
    "httpx",
    "prometheus_client",
    "opentelemetry",
)


def _path(module: str) -> pathlib.Path:
    relative = pathlib.Path(*module.split("."))
    candidate = PACKAGE / relative.with_suffix(".py")
    return candidate if candidate.exists() else PACKAGE / relative / "__init__.py"


@functools.cache
def imports(module: str) -> frozenset[str]:
    """Every module `hapaxd.<module>` imports, directly or through other hapaxd modules."""
    tree = ast.parse(_path(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    for name in list(found):
        if name.startswith("hapaxd.") and _path(name[len("hapaxd.") :]).exists():
            found |= imports(name[len("hapaxd.") :])
    return frozenset(found)


def forbidden(names: frozenset[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_modules_import_no_transport_http_or_telemetry(module: str) -> None:
    assert forbidden(imports(module), TRANSPORT_AND_IO) == []


@pytest.mark.parametrize(
    "module", [p.stem for p in (PACKAGE / "providers").glob("*.py") if p.stem != "__init__"]
)
def test_provider_adapters_never_import_grpc(module: str) -> None:
    names = imports(f"providers.{module}")
    assert forbidden(names, ("grpc", "hapax", "google.rpc", "prometheus_client")) == []


def test_the_check_sees_a_violation() -> None:
    assert forbidden(imports("service"), TRANSPORT_AND_IO), "service.py imports grpc"
