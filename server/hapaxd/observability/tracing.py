"""OpenTelemetry tracing, off unless the standard OTEL_* variables ask for it: a server span per RPC
(opentelemetry-instrumentation-grpc, continuing the caller's `traceparent`), a GenAI span per
upstream attempt around each provider call, the aiohttp client instrumented beneath it (so
`traceparent` goes upstream), and failovers, retries and breaker changes as events on the RPC span
(observability/listeners.py `span_events`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from hapaxd.core.errors import UpstreamError
from hapaxd.core.provider import Embedder, Provider
from hapaxd.core.types import Chunk, Completion, CompletionRequest, EmbeddingRequest, Embeddings
from hapaxd.core.upstream import Upstream

SERVICE_NAME = "hapaxd"
CLIENT_ATTRIBUTE = "hapax.client.id"  # the API key id of the caller, on the server span
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """True when the environment configures a trace exporter (and the SDK is not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(environ.get(name) for name in _ENDPOINT_VARS)


def _exporter_from(environ: Mapping[str, str]) -> SpanExporter:
    kind = (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: only otlp, console and none are built in")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*


def _usage(span: Span, item: Completion | Chunk) -> None:
    if item.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", item.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", item.usage.completion_tokens)
    if item.upstream_model:
        span.set_attribute("gen_ai.response.model", item.upstream_model)
    if item.finish_reason is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [item.finish_reason.value])


def _failed(span: Span, error: BaseException) -> None:
    if isinstance(error, (GeneratorExit, asyncio.CancelledError)):
        span.set_attribute("error.type", "cancelled")  # the caller left; not the provider's fault
        return
    if isinstance(error, UpstreamError):
        kind, message = error.failure_class.value, error.message
    else:
        kind, message = type(error).__qualname__, ""
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message[:200]))


class TracedProvider:
    """A provider whose every call is one GenAI client span (current during the call, so the HTTP
    client's span nests beneath it). Everything else is passed through; a provider that can embed
    is wrapped as TracedEmbedder, so the wrapper is an Embedder exactly when the inner one is."""

    def __init__(self, inner: Provider, tracer: trace.Tracer) -> None:
        self.inner = inner
        self._tracer = tracer

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def type(self) -> str:
        return self.inner.type

    def _start(
        self, request: CompletionRequest | EmbeddingRequest, operation: str = "chat"
    ) -> Span:
        return self._tracer.start_span(
            f"{operation} {request.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.system": self.inner.type,
                "gen_ai.provider.name": self.inner.type,
                "gen_ai.request.model": request.model,
                "hapax.provider": self.inner.name,
            },
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        span = self._start(request)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            completion = await self.inner.complete(request)
        except BaseException as error:
            _failed(span, error)
            raise
        else:
            _usage(span, completion)
            return completion
        finally:
            otel_context.detach(token)
            span.end()

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        span = self._start(request)
        current = trace.set_span_in_context(span)
        source = self.inner.stream(request)
        try:
            while True:
                # The span is current only while this generator runs, never across a yield.
                token = otel_context.attach(current)
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                _usage(span, chunk)
                yield chunk
        except BaseException as error:
            _failed(span, error)
            raise
        finally:
            try:
                await source.aclose()
            finally:
                span.end()

    async def probe(self) -> None:
        await self.inner.probe()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TracedEmbedder(TracedProvider):
    """A traced provider that can embed: each embedding call is one span too."""

    def __init__(self, inner: Embedder, tracer: trace.Tracer) -> None:
        super().__init__(inner, tracer)
        self._embedder = inner

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        span = self._start(request, "embeddings")
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            vectors = await self._embedder.embed(request)
        except BaseException as error:
            _failed(span, error)
            raise
        else:
            span.set_attribute("gen_ai.usage.input_tokens", vectors.usage.prompt_tokens)
            if vectors.upstream_model:
                span.set_attribute("gen_ai.response.model", vectors.upstream_model)
            return vectors
        finally:
            otel_context.detach(token)
            span.end()


def _url_without_query(url: Any) -> str:
    """The span's URL without query or fragment (some vendors take keys as parameters)."""
    return str(url.with_query(None).with_fragment(None))


_aiohttp_lock = threading.Lock()
_aiohttp_owner: Tracing | None = None


class Tracing:
    """One tracer provider and what hangs off it. The aiohttp client instrumentation is
    process-wide: the most recently started Tracing owns it until it shuts down."""

    def __init__(self, provider: TracerProvider, *, set_global: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("hapaxd")
        self.server_interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=provider, filter_=filters.service_prefix("hapax.v1.")
        )
        if set_global:
            trace.set_tracer_provider(provider)
        self._instrument_http_client()

    def _instrument_http_client(self) -> None:
        global _aiohttp_owner
        with _aiohttp_lock:
            instrumentor = AioHttpClientInstrumentor()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            instrumentor.instrument(tracer_provider=self.provider, url_filter=_url_without_query)
            _aiohttp_owner = self

    def instrument(self, upstreams: Sequence[Upstream]) -> None:
        """Wrap each upstream's provider so every attempt is a span."""
        for upstream in upstreams:
            provider = upstream.provider
            if isinstance(provider, TracedProvider):
                continue
            if isinstance(provider, Embedder):
                upstream.provider = TracedEmbedder(provider, self.tracer)
            else:
                upstream.provider = TracedProvider(provider, self.tracer)

    def current_trace_id(self) -> str:
        span_context = trace.get_current_span().get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else ""

    @staticmethod
    def tag_client(client: str) -> None:
        """The caller's API key id (never the key) on the current server span."""
        trace.get_current_span().set_attribute(CLIENT_ATTRIBUTE, client)

    def shutdown(self) -> None:
        global _aiohttp_owner
        with _aiohttp_lock:
            if _aiohttp_owner is self:
                AioHttpClientInstrumentor().uninstrument()
                _aiohttp_owner = None
        self.provider.shutdown()


def with_exporter(exporter: SpanExporter, *, batch: bool = False) -> Tracing:
    """Tracing into an explicit exporter (tests: InMemorySpanExporter, synchronous by default)."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return Tracing(provider)


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """Tracing as the OTEL_* variables configure it, or None (nothing installed) without them."""
    environ = os.environ if environ is None else environ
    if not tracing_requested(environ):
        return None
    name = environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter_from(environ)))
    return Tracing(provider, set_global=True)
