"""Embedding is a protocol of its own (core.provider.Embedder): the tracing wrapper keeps it, so a
traced upstream can embed exactly when its adapter can, and each embedding call is one span."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hapaxd.config import BreakerSettings
from hapaxd.core.breaker import CircuitBreaker
from hapaxd.core.provider import Embedder, ProviderSpec
from hapaxd.core.types import EmbeddingRequest
from hapaxd.core.upstream import Upstream
from hapaxd.observability.tracing import with_exporter
from hapaxd.providers.anthropic import AnthropicProvider
from hapaxd.providers.local import LocalProvider


async def test_a_traced_provider_embeds_only_when_its_adapter_can() -> None:
    exporter = InMemorySpanExporter()
    tracing = with_exporter(exporter)
    adapters = (
        LocalProvider(ProviderSpec("local", "local")),
        AnthropicProvider(ProviderSpec("claude", "anthropic")),
    )
    upstreams = [Upstream(p, CircuitBreaker(BreakerSettings())) for p in adapters]
    try:
        tracing.instrument(upstreams)
        embedder, chat_only = (u.provider for u in upstreams)
        assert isinstance(embedder, Embedder)
        assert not isinstance(chat_only, Embedder) and not hasattr(chat_only, "embed")

        answer = await embedder.embed(EmbeddingRequest("local", ("a", "b")))

        assert len(answer.vectors) == 2
        [span] = exporter.get_finished_spans()
        assert span.name == "embeddings local"
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "embeddings"
        assert span.attributes["hapax.provider"] == "local"
    finally:
        tracing.shutdown()
        for adapter in adapters:
            await adapter.aclose()
