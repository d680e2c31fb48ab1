"""Builds a provider adapter from its spec by `spec.type`: one line per adapter below (and one in
CHECKS for a type with something of its own to say in `hapaxd check-config`). Everything else
about a provider type (its options, capabilities, vendor_options wire, secrets its library reads
from the environment, ...) is declared with it in config/provider_types.py. Must not import
grpc."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from hapaxd.config import PROVIDER_TYPES, ProviderSettings
from hapaxd.core.provider import Provider, ProviderSpec, Timeouts
from hapaxd.providers.anthropic import AnthropicProvider
from hapaxd.providers.bedrock import BedrockProvider
from hapaxd.providers.bedrock import check_lines as bedrock_check_lines
from hapaxd.providers.gemini import GeminiProvider
from hapaxd.providers.local import LocalProvider
from hapaxd.providers.ollama import OllamaProvider
from hapaxd.providers.openai import AzureOpenAIProvider, OpenAIProvider
from hapaxd.providers.vertex import VertexProvider

# One adapter for each of config's PROVIDER_TYPES (provider_types.KINDS; tests/providers checks
# both agree).
ADAPTERS: Mapping[str, Callable[[ProviderSpec], Provider]] = {
    "local": LocalProvider,
    "openai": OpenAIProvider,
    "azure_openai": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
    "gemini": GeminiProvider,
    "vertex": VertexProvider,
    "bedrock": BedrockProvider,
}


def spec_of(settings: ProviderSettings) -> ProviderSpec:
    """What an adapter is built from: the provider's settings with its secret revealed."""
    t = settings.timeouts
    return ProviderSpec(
        name=settings.name,
        type=settings.type,
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value(),
        headers=dict(settings.headers),
        timeouts=Timeouts(t.connect, t.first_byte, t.idle, t.total),
        max_connections=settings.max_connections,
        options=dict(settings.options),
        credentials=settings.credentials.get_secret_value(),
    )


def build_provider(spec: ProviderSpec) -> Provider:
    """The adapter for `spec.type`; ValueError for a type no adapter implements."""
    factory = ADAPTERS.get(spec.type)
    if factory is None:
        raise ValueError(
            f"provider {spec.name!r}: unknown type {spec.type!r}; "
            f"known types: {', '.join(PROVIDER_TYPES)}"
        )
    return factory(spec)


# What `hapaxd check-config` says of a type's providers beyond their settings, for the types that
# have something to say: (their names, whether secrets are checked) -> lines.
CHECKS: Mapping[str, Callable[[list[str], bool], list[str]]] = {
    "bedrock": bedrock_check_lines,
}


def check_lines(providers: Sequence[ProviderSettings], secrets: bool) -> list[str]:
    """check-config's lines for every type in `providers` that has a check, in type order."""
    lines: list[str] = []
    for kind, check in CHECKS.items():
        names = [p.name for p in providers if p.type == kind]
        if names:
            lines += check(names, secrets)
    return lines
