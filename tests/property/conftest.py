"""A real gateway (local provider) on its own thread's event loop, for hypothesis to drive with
synchronous clients; one per module: gRPC stubs, and the OpenAI-compatible HTTP door."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd.app import App
from tests.conftest import make_settings


@contextlib.contextmanager
def serve(**settings: Any) -> Iterator[App]:
    """A started App (settings as make_settings takes them) on a loop of its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> App:  # grpc.aio binds a server to the loop it is made on
        app = App(make_settings(**settings), address="127.0.0.1:0")
        await app.start()
        return app

    app = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield app
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(grace=0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    with serve(server={"max_content_chars": 5000}) as app:
        # A client that accepts any trailer size, so an oversized error would be seen, not hidden.
        options = [
            ("grpc.max_metadata_size", 1 << 20),
            ("grpc.absolute_max_metadata_size", 1 << 20),
        ]
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}", options=options)
        yield channel
        channel.close()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.CompletionServiceStub:
    return pb_grpc.CompletionServiceStub(channel)


@pytest.fixture(scope="module")
def door_url() -> Iterator[str]:
    """The base URL of the OpenAI-compatible HTTP door (`.../v1`) of a local-provider gateway."""
    with serve(
        server={"max_content_chars": 5000},
        openai_http={"enabled": True, "address": "127.0.0.1:0"},
    ) as app:
        assert app.openai_http is not None
        yield f"http://127.0.0.1:{app.openai_http.port}/v1"
