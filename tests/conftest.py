"""Shared fixtures: a real gateway on 127.0.0.1:0 and a real channel to it, and its access log."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import shutil
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest

from hapax.v1 import admin_service_pb2_grpc, completion_service_pb2_grpc
from hapaxd import config
from hapaxd.app import App

pytest_plugins = ["tests.fakes.fixtures", "tests.support.logcapture"]

# Every gateway the tests start (in this process or as a subprocess, which inherits it) keeps its
# usage ledger under one temporary state directory, never in the user's ~/.local/state.
if not os.environ.get("HAPAX_STATE_DIR"):
    import atexit
    import tempfile

    os.environ["HAPAX_STATE_DIR"] = tempfile.mkdtemp(prefix="hapax-tests-state-")
    atexit.register(shutil.rmtree, os.environ["HAPAX_STATE_DIR"], True)

LOCAL = {"name": "local", "type": "local", "models": {"*": "local"}}

# --- what `make check` leaves out ----------------------------------------------------------------
# `external`: the test starts a process or needs a program outside this interpreter (grpcurl, node,
# redis-server, promtool, buf, the hapaxd CLI, a venv...). Marked here, from the code: a test is
# external when its function or a fixture it uses (also one asked for by getfixturevalue), or any
# tests/ or benchmarks/ function, class or module they name, transitively, calls one of SPAWNERS
# or loads code from a file (UNSEEN). So a new test needs no tag; a file may still say
# `pytestmark = pytest.mark.external`. `slow`: the load and soak tests in SLOW, and any file that
# says `pytestmark = pytest.mark.slow`.

SPAWNERS = frozenset(
    {
        subprocess.Popen,
        subprocess.run,
        subprocess.call,
        subprocess.check_call,
        subprocess.check_output,
        asyncio.create_subprocess_exec,
        asyncio.create_subprocess_shell,
        shutil.which,  # looking for a program: about to run it
        os.system,
        os.posix_spawn,
        os.fork,
        os.execv,
        os.execvp,
    }
)
SLOW = {
    "tests/e2e/test_resilience.py": {"test_1000_requests_through_a_flapping_primary_all_succeed"},
    "tests/transport/test_connection_limits.py": {
        "test_thousands_of_idle_connections_do_not_stop_others_and_are_dropped",
        "test_a_peer_that_stops_answering_pings_is_dropped_by_keepalive",
    },
    "tests/admission/test_reload.py": {
        "test_a_reload_under_steady_load_fails_no_call_and_revokes_at_once"
    },
}
# Loading code from a file: what it runs cannot be seen from here, so it counts as a spawner.
UNSEEN = frozenset({"exec_module", "run_path", "run_module"})
_OURS = ("tests.", "benchmarks.")
Node = tuple[types.CodeType, types.ModuleType]  # a function's code and the module it runs in


def _node(obj: object) -> Node | None:
    try:
        obj = inspect.unwrap(obj) if inspect.isfunction(obj) else obj
    except ValueError:  # a __wrapped__ loop
        return None
    obj = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)  # a @given test
    if not inspect.isfunction(obj) or not obj.__module__.startswith(_OURS):
        return None
    module = sys.modules.get(obj.__module__)
    return (obj.__code__, module) if module is not None else None


@functools.cache
def _uses(node: Node) -> tuple[bool, tuple[Node, ...], tuple[str, ...]]:
    """(calls a spawner itself, the tests/ and benchmarks/ functions it names (a class: its
    methods; a module: the names it takes from it), fixtures it asks for by name)."""
    code, scope = node
    names = code.co_names
    found: list[object] = [vars(scope).get(n, sys.modules.get(n)) for n in names]
    for module in [o for o in found if isinstance(o, types.ModuleType)]:
        found += [getattr(module, n, None) for n in names]
    direct, reached = not UNSEEN.isdisjoint(names), []
    for obj in found:
        if isinstance(obj, type):
            if obj.__module__.startswith(_OURS):
                reached += [_node(v) for v in vars(obj).values() if inspect.isfunction(v)]
            continue
        try:
            direct = direct or obj in SPAWNERS
        except TypeError:  # unhashable
            continue
        reached.append(_node(obj))
    reached += [(c, scope) for c in code.co_consts if isinstance(c, types.CodeType)]
    asked = [c for c in code.co_consts if isinstance(c, str)] if "getfixturevalue" in names else []
    return direct, tuple(n for n in reached if n is not None), tuple(asked)


def _starts_processes(item: pytest.Item) -> bool:
    """Whether the test, or a fixture it uses, reaches a SPAWNERS call (see above)."""
    manager = item.session._fixturemanager  # private, but how a name becomes its fixtures
    todo = [_node(getattr(item, "obj", None))]
    seen_fixtures: set[str] = set()
    fixtures = list(getattr(item, "fixturenames", ()))
    seen: set[Node] = set()
    while todo or fixtures:
        while fixtures:
            name = fixtures.pop()
            if name not in seen_fixtures:
                seen_fixtures.add(name)
                todo += [_node(d.func) for d in manager.getfixturedefs(name, item) or ()]
        node = todo.pop() if todo else None
        if node is None or node in seen:
            continue
        seen.add(node)
        direct, reached, asked = _uses(node)
        if direct:
            return True
        todo += reached
        fixtures += asked
    return False


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        if _starts_processes(item):
            item.add_marker(pytest.mark.external)
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if getattr(item, "originalname", item.name) in SLOW.get(path, ()):
            item.add_marker(pytest.mark.slow)


def make_settings(**data: Any) -> config.Settings:
    """Settings from a config mapping; the local provider and default model, and auth off,
    unless given."""
    data.setdefault("providers", [LOCAL])
    data.setdefault("default_model", "default")
    data.setdefault("health_check", {"enabled": False})
    data.setdefault("metrics", {"address": "127.0.0.1:0"})
    data.setdefault("auth", {"enabled": False})  # tests/admission/ turn it on
    return config.parse(data, {})


class Gateway:
    """A started App and stubs on a channel to it."""

    def __init__(self, app: App, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.channel = channel
        self.address = f"127.0.0.1:{app.port}"
        self.stub = completion_service_pb2_grpc.CompletionServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)


StartGateway = Callable[..., Awaitable[Gateway]]


class AccessLog(logging.Handler):
    """The access log lines (records of "hapaxd.access"), awaitable by count."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("hapaxd.access")
    handler, level = AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """start_gateway(settings, **App kwargs) -> Gateway; everything is stopped after the test."""
    started: list[Gateway] = []

    async def start(settings: config.Settings | None = None, **kwargs: Any) -> Gateway:
        app = App(settings or make_settings(), address="127.0.0.1:0", **kwargs)
        await app.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        gateway = Gateway(app, channel)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.channel.close()
        await gateway.app.stop(grace=0)


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway on the local provider only."""
    return await start_gateway()
