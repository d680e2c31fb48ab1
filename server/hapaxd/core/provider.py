"""The provider protocol every adapter implements, Embedder for those that can embed too, and the
plain settings an adapter is built from.

Imports nothing from grpc. Adapters raise only errors.UpstreamError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Protocol, runtime_checkable

from hapaxd.core.types import Chunk, Completion, CompletionRequest, EmbeddingRequest, Embeddings


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds.

    connect: TCP (and TLS) connect. first_byte: from sending the request to the response headers.
    idle: the longest silence between two reads of a body, so a stalled stream is cut.
    total: the whole call, body included.
    """

    connect: float = 5.0
    first_byte: float = 60.0
    idle: float = 30.0
    total: float = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What an adapter needs to reach its upstream, resolved from config (no env lookups left)."""

    name: str
    type: str
    base_url: str = ""
    api_key: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    max_connections: int = 100
    # Vendor-specific settings, e.g. Azure's api_version and deployment, Anthropic's version.
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What the type's secret file holds (config/provider_types.py SecretFile; a Google
    # service-account key file for vertex): secret, like api_key.
    credentials: str = dataclasses.field(default="", repr=False)


@runtime_checkable
class Provider(Protocol):
    """One upstream. `request.model` is already the upstream model name."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    async def complete(self, request: CompletionRequest) -> Completion:
        """One whole answer, or UpstreamError."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        """Chunks as they arrive. Nothing is yielded before the upstream has answered."""
        ...

    async def probe(self) -> None:
        """A cheap liveness call (no tokens where the vendor allows); UpstreamError if down."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections."""
        ...


@runtime_checkable
class Embedder(Provider, Protocol):
    """A provider that can embed (a vendor with no embeddings API does not implement it). The
    router asks only these, whatever a provider's capabilities say."""

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One vector per input, in input order, or UpstreamError."""
        ...
