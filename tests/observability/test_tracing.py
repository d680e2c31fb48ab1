"""OpenTelemetry: the span tree of a call that failed over once, trace context continued from the
caller and passed upstream, and nothing installed when no OTEL_* variable is set."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability import Observability
from hapaxd.observability import tracing as telemetry
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.observability.conftest import Observe, openai_provider, settings_with

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def failover_settings(fake: FakeUpstream) -> object:
    return settings_with(
        providers=[
            openai_provider(fake, "primary", models={"default": "gpt-main"}),
            openai_provider(fake, "backup", models={"default": "gpt-backup"}),
        ],
        provider_preference=["primary", "backup"],
        router={"retry": {"max_attempts": 1}},
    )


async def finished(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    """The finished spans once the server span is among them (5 s at most): it ends when the
    interceptor has finished the call, which may be just after the caller has read its status."""
    for _ in range(500):
        if by_kind(exporter.get_finished_spans(), SpanKind.SERVER):
            break
        await asyncio.sleep(0.01)
    return exporter.get_finished_spans()


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind is kind), key=lambda s: s.start_time or 0)


@pytest.mark.parametrize("streaming", [False, True])
async def test_span_tree_of_a_call_that_failed_over_once(
    observe: Observe,
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    streaming: bool,
) -> None:
    exporter = InMemorySpanExporter()
    observed = await observe(
        failover_settings(fake_upstream), tracing=telemetry.with_exporter(exporter)
    )
    caplog.set_level(logging.INFO, logger="hapaxd.access")
    fake_upstream.script(
        "openai.chat",
        Fail(500),
        Reply(prompt_tokens=9, completion_tokens=4, model="gpt-backup-0613"),
    )
    metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
    if streaming:
        replies = [
            m
            async for m in observed.stub.StreamComplete(
                pb.StreamCompleteRequest(prompt="hi"), metadata=metadata
            )
        ]
        assert replies[-1].route.provider == "backup"
    else:
        reply = await observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=metadata)
        assert reply.route.provider == "backup"

    spans = await finished(exporter)
    (server,) = by_kind(spans, SpanKind.SERVER)
    method = "StreamComplete" if streaming else "Complete"
    assert server.name == f"/hapax.v1.CompletionService/{method}"
    assert format(server.context.trace_id, "032x") == TRACE_ID  # continued from the caller
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in spans)

    attempts = [s for s in by_kind(spans, SpanKind.CLIENT) if s.name.startswith("chat ")]
    assert [s.name for s in attempts] == ["chat gpt-main", "chat gpt-backup"]
    failed, served = attempts
    for span, provider in ((failed, "primary"), (served, "backup")):
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.attributes["gen_ai.system"] == "openai"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["hapax.provider"] == provider
    assert failed.attributes["gen_ai.request.model"] == "gpt-main"
    assert failed.attributes["error.type"] == "transient"
    assert failed.status.status_code is StatusCode.ERROR
    assert served.attributes["gen_ai.request.model"] == "gpt-backup"
    assert served.attributes["gen_ai.response.model"] == "gpt-backup-0613"
    assert served.attributes["gen_ai.usage.input_tokens"] == 9
    assert served.attributes["gen_ai.usage.output_tokens"] == 4
    assert "error.type" not in served.attributes

    http = [s for s in by_kind(spans, SpanKind.CLIENT) if not s.name.startswith("chat ")]
    assert len(http) == 2
    assert {s.parent.span_id for s in http if s.parent} == {a.context.span_id for a in attempts}

    events = [(e.name, dict(e.attributes or {})) for e in server.events]
    assert (
        "hapax.failover",
        {"hapax.failover.from": "primary", "hapax.failover.to": "backup"},
    ) in events

    # The upstream got the trace context of its attempt, and the log line the trace id.
    parents = [r.headers["traceparent"].split("-") for r in fake_upstream.requests]
    assert [p[1] for p in parents] == [TRACE_ID, TRACE_ID]
    http_ids = {format(s.context.span_id, "016x") for s in http}
    assert {p[2] for p in parents} == http_ids
    (line,) = [r for r in caplog.records if r.name == "hapaxd.access"]
    assert line.trace_id == TRACE_ID


async def test_breaker_opening_is_an_event_on_the_rpc_span(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    exporter = InMemorySpanExporter()
    settings = settings_with(
        providers=[openai_provider(fake_upstream, "only")],
        router={"retry": {"max_attempts": 1}},
        circuit_breaker={"failure_threshold": 1, "timeout": "1h"},
    )
    observed = await observe(settings, tracing=telemetry.with_exporter(exporter))
    fake_upstream.script("openai.chat", Fail(503))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="hi"))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    (server,) = by_kind(await finished(exporter), SpanKind.SERVER)
    events = [(e.name, dict(e.attributes or {})) for e in server.events]
    assert (
        "hapax.circuit_breaker",
        {"hapax.provider": "only", "hapax.circuit_breaker.to": "open"},
    ) in events


def test_nothing_is_installed_without_otel_variables() -> None:
    obs = Observability(settings_with(), environ={"PATH": "/usr/bin"})
    assert obs.tracing is None
    assert obs.interceptors == (), "no tracing interceptor"
    assert not isinstance(trace.get_tracer_provider(), telemetry.TracerProvider)
    assert not AioHttpClientInstrumentor().is_instrumented_by_opentelemetry
    assert telemetry.tracing_requested({}) is False
    assert telemetry.tracing_requested({"OTEL_SERVICE_NAME": "x"}) is False
    assert (
        telemetry.tracing_requested(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}
        )
        is False
    )
    assert (
        telemetry.tracing_requested(
            {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}
        )
        is False
    )
    assert telemetry.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert telemetry.tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})


def test_otel_variables_install_a_batching_otlp_exporter() -> None:
    """In a fresh interpreter: the global tracer provider is set from OTEL_* (no collector
    needs to listen; nothing is exported here)."""
    script = """
import json
from opentelemetry import trace
from hapaxd.observability import tracing as telemetry
tracing = telemetry.from_environment()
provider = trace.get_tracer_provider()
processors = provider._active_span_processor._span_processors
print(json.dumps({
    "global": provider is tracing.provider,
    "processors": [type(p).__name__ for p in processors],
    "exporters": [type(p.span_exporter).__name__ for p in processors],
    "service": provider.resource.attributes["service.name"],
}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_SERVICE_NAME="gw-test",
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {
        "global": True,
        "processors": ["BatchSpanProcessor"],
        "exporters": ["OTLPSpanExporter"],
        "service": "gw-test",
    }
