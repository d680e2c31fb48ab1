"""Builds a provider adapter from its spec by `spec.type`. Must not import grpc."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hapaxd.providers.anthropic import AnthropicProvider
from hapaxd.providers.base import Provider, ProviderSpec
from hapaxd.providers.local import LocalProvider
from hapaxd.providers.ollama import OllamaProvider
from hapaxd.providers.openai import AzureOpenAIProvider, OpenAIProvider

_FACTORIES: Mapping[str, Callable[[ProviderSpec], Provider]] = {
    "local": LocalProvider,
    "openai": OpenAIProvider,
    "azure_openai": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
}

PROVIDER_TYPES: tuple[str, ...] = tuple(_FACTORIES)


def build_provider(spec: ProviderSpec) -> Provider:
    """The adapter for `spec.type`; ValueError for a type no adapter implements."""
    factory = _FACTORIES.get(spec.type)
    if factory is None:
        raise ValueError(
            f"provider {spec.name!r}: unknown type {spec.type!r}; "
            f"known types: {', '.join(PROVIDER_TYPES)}"
        )
    return factory(spec)
