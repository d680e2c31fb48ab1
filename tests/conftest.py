"""Shared fixtures: a real gateway on 127.0.0.1:0 and a real channel to it, and its access log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest

from hapax.v1 import admin_service_pb2_grpc, completion_service_pb2_grpc
from hapaxd import config
from hapaxd.app import App

pytest_plugins = ["tests.fakes.fixtures", "tests.support.logcapture"]

LOCAL = {"name": "local", "type": "local", "models": {"*": "local"}}


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
