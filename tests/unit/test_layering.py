"""The import direction, by folder: every module of server/hapaxd is checked (an ast walk of its
source), so a module is covered the day it is added.

    config/         imports nothing else of hapaxd
    core/           config and core only; no grpc, protobuf, HTTP client, prometheus or otel
    providers/      core, config, providers; no grpc, protobuf, prometheus or otel
    admission/      config, core, admission; no grpc, protobuf, HTTP client, prometheus or otel
    api/            core, config, admission, api; no HTTP client, prometheus or otel
    observability/  core, config, admission, api, observability; never the adapters
    openai_http/    the HTTP door: core, config, admission, api, observability, openai_http;
                    no generated stubs, prometheus or otel (metrics go through observability/)
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
    "providers": (("config", "core", "providers"), GRPC + STUBS + TELEMETRY),
    "admission": (("config", "core", "admission"), GRPC + STUBS + HTTP + TELEMETRY),
    "api": (("config", "core", "admission", "api"), HTTP + TELEMETRY),
    "observability": (("config", "core", "admission", "api", "observability"), ()),
    "openai_http": (
        ("config", "core", "admission", "api", "observability", "openai_http"),
        STUBS + TELEMETRY,
    ),
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
    assert violations("core", "from hapaxd.core.types import Route\nimport asyncio\n") == []
