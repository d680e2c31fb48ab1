"""Micro-benchmark of the observability interceptor's per-call cost (not a test; run by hand):

    .venv/bin/python -m tests.observability.bench_interceptor

It times the wrapped unary and streaming behaviours against the bare ones, with the access log
written as JSON to an in-memory stream and with the access log turned off."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

import grpc

from hapaxd.observability import redaction
from hapaxd.observability.log_format import JsonFormatter
from hapaxd.observability.metrics import Metrics
from hapaxd.observability.rpc_observer import ObservabilityInterceptor
from tests.observability.conftest import settings_with

N = 20_000


class FakeContext:
    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "bench"),)


async def bare_unary(request: Any, context: Any) -> str:
    return "ok"


async def bare_stream(request: Any, context: Any) -> Any:
    for _ in range(3):
        yield "chunk"


async def time_unary(behavior: Any) -> float:
    context = FakeContext()
    started = time.perf_counter()
    for _ in range(N):
        await behavior(None, context)
    return (time.perf_counter() - started) / N


async def time_stream(behavior: Any) -> float:
    context = FakeContext()
    started = time.perf_counter()
    for _ in range(N):
        async for _ in behavior(None, context):
            pass
    return (time.perf_counter() - started) / N


async def main() -> None:
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    interceptor = ObservabilityInterceptor(Metrics(settings_with()), logger=logger)

    unary = interceptor._wrap(
        grpc.unary_unary_rpc_method_handler(bare_unary),
        interceptor._methods["/hapax.v1.CompletionService/Complete"],
    ).unary_unary
    stream = interceptor._wrap(
        grpc.unary_stream_rpc_method_handler(bare_stream),
        interceptor._methods["/hapax.v1.CompletionService/StreamComplete"],
    ).unary_stream
    runs = [(logging.INFO, "JSON access log"), (logging.WARNING, "access log off")]
    redactor = redaction.Redactor(["sk-bench-secret-0123456789", "another-secret-value"])
    for redacting in (False, True):
        if redacting:
            redaction.attach(redactor)
        for level, label in runs:
            logger.setLevel(level)
            base_u, wrapped_u = await time_unary(bare_unary), await time_unary(unary)
            base_s, wrapped_s = await time_stream(bare_stream), await time_stream(stream)
            print(
                f"{label}{', redaction on' if redacting else ''}: "
                f"unary +{(wrapped_u - base_u) * 1e6:.1f} us/call, "
                f"stream +{(wrapped_s - base_s) * 1e6:.1f} us/call"
            )


if __name__ == "__main__":
    asyncio.run(main())
