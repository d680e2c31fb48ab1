"""Gateway configuration: a YAML file with ${VAR} / ${VAR:-default} expansion, validated into
frozen settings at start. Every problem is reported at once, one line each naming the exact key
(`providers[1].base_url: not a URL`): unset variables, bad values (vendor options included, each
provider type has a small schema of its own) and cross-field checks.

The three ways in are here, each giving Settings or one ConfigError:
`load(path, environ)` reads a file, `parse(data, environ)` takes parsed YAML, and
`default_settings(environ)` is the built-in config used when no file is given.

    provider_types.py  every provider type declared once (KINDS): its vendor option schema,
                 default capabilities, image URLs, vendor_options wire, required base_url and
                 detection; schema, sources, core and the adapter registry read it
    schema.py    the frozen models (Settings and its sections), field and section checks,
                 ProviderType / PROVIDER_TYPES and OPTIONS (from provider_types.py)
    fields.py    the value types they share: durations, text, versions, the frozen base
    sources.py   reading the file, ${VAR} expansion, *_env secret lookup, API key digests
                 (from sha256, key_env or key_file), the built-in default
    messages.py  ConfigError, pydantic errors -> one line per key, the cross-field checks
    watch.py     whether the config file changed (for reload without a restart)

Imports nothing else of hapaxd: core, providers and the rest read settings, never the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from hapaxd.config import sources
from hapaxd.config.messages import ConfigError, validation_problems
from hapaxd.config.schema import (
    PROVIDER_TYPES,
    Access,
    AuthSettings,
    BreakerSettings,
    BudgetSettings,
    BudgetsSettings,
    CacheSettings,
    DedupSettings,
    EnergySettings,
    HealthCheckSettings,
    KeepaliveSettings,
    KeySettings,
    LedgerSettings,
    LoggingSettings,
    MetricsSettings,
    ModelCacheSettings,
    ModelSettings,
    OpenAIHttpSettings,
    PricesSettings,
    ProviderSettings,
    ProviderType,
    RateLimitSettings,
    RedisConnection,
    ReloadSettings,
    RetrySettings,
    RouterSettings,
    SemanticCacheSettings,
    ServerSettings,
    Settings,
    SharedStore,
    TimeoutSettings,
    TlsSettings,
)
from hapaxd.config.sources import digest

__all__ = [
    "PROVIDER_TYPES",
    "Access",
    "AuthSettings",
    "BreakerSettings",
    "BudgetSettings",
    "BudgetsSettings",
    "CacheSettings",
    "ConfigError",
    "DedupSettings",
    "EnergySettings",
    "HealthCheckSettings",
    "KeepaliveSettings",
    "KeySettings",
    "LedgerSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ModelCacheSettings",
    "ModelSettings",
    "OpenAIHttpSettings",
    "PricesSettings",
    "ProviderSettings",
    "ProviderType",
    "RateLimitSettings",
    "RedisConnection",
    "ReloadSettings",
    "RetrySettings",
    "RouterSettings",
    "SemanticCacheSettings",
    "ServerSettings",
    "Settings",
    "SharedStore",
    "TimeoutSettings",
    "TlsSettings",
    "default_settings",
    "digest",
    "load",
    "parse",
]


def parse(data: Any, environ: Mapping[str, str], *, secrets: bool = True) -> Settings:
    """Settings from the parsed YAML, or one ConfigError with a line per problem: unset
    environment variables, bad keys and cross-field checks, all at once. secrets=False checks
    everything but that the secret environment variables (api_key_env, ...) are set."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping at the top level")
    expanded, unset = sources.expand(data, environ)
    problems = [line for _, line in unset]
    problems += sources.fill_secrets(expanded, environ, secrets=secrets)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        problems += validation_problems(exc, expanded, {key for key, _ in unset})
        raise ConfigError("\n".join(problems)) from None
    if problems:
        raise ConfigError("\n".join(problems))
    return settings


def load(path: str, environ: Mapping[str, str] | None = None, *, secrets: bool = True) -> Settings:
    """Settings from the YAML file at `path`; `environ` defaults to the process environment."""
    environ = os.environ if environ is None else environ
    return parse(sources.read(path), environ, secrets=secrets)


def default_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The built-in config: detected providers first, the local provider last."""
    environ = os.environ if environ is None else environ
    return parse(sources.default_config(environ), environ)
