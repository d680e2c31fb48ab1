"""One worker process of `serve --workers N` (`hapaxd worker ...`, started by supervisor.py,
never by hand): the whole gateway (app.py `serve`) on the ports the supervisor holds, shared
with the other workers through SO_REUSEPORT, with its metrics on a loopback port of its own that
the supervisor scrapes. It tells the supervisor it is serving with one JSON line on the report
pipe, and drains and exits when the supervisor's lifeline pipe closes (the supervisor died) as
on SIGTERM. A reload (SIGHUP, or the file watch) reads the same file the supervisor read.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from typing import Any

from hapaxd.app import App, serve
from hapaxd.config import Settings

INTERNAL_METRICS = "127.0.0.1:0"  # each worker's own side port, for the supervisor only


def worker_settings(settings: Settings, grpc_address: str, http_address: str) -> Settings:
    """`settings` as a worker runs them: on the supervisor's resolved ports, metrics on loopback
    (plain HTTP: the supervisor serves the public endpoint, with TLS if configured)."""
    server = settings.server.model_copy(update={"address": grpc_address})
    metrics = settings.metrics.model_copy(update={"address": INTERNAL_METRICS, "tls": None})
    update: dict[str, object] = {"server": server, "metrics": metrics}
    if http_address:
        update["openai_http"] = settings.openai_http.model_copy(update={"address": http_address})
    return settings.model_copy(update=update)


async def run_worker(
    load: Callable[[], Settings],
    path: str,
    index: int,
    report_fd: int,
    lifeline_fd: int,
) -> None:
    def started(app: App) -> None:
        port = app.observability.metrics_port
        line = {"index": index, "pid": os.getpid(), "metrics_port": port}
        os.write(report_fd, (json.dumps(line) + "\n").encode())
        os.close(report_fd)

    def lifeline() -> Coroutine[Any, Any, None]:
        return _lifeline(lifeline_fd)

    await serve(load(), load, path, worker=index, started=started, lifeline=lifeline)


async def _lifeline(fd: int) -> None:
    """Returns when the supervisor is gone: the pipe it holds the other end of reaches EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    while await reader.read(64):
        pass
