"""Gateway configuration: a YAML file with ${VAR} / ${VAR:-default} expansion, validated into
frozen settings at start; every error names the exact key (`providers[1].base_url: not a URL`).

With no file, `default_settings(environ)` serves the local provider plus any provider whose usual
environment variable is set. Imports nothing from grpc or the HTTP client.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hapaxd.providers.base import ProviderSpec, Timeouts

PROVIDER_TYPES = ("local", "openai", "azure_openai", "anthropic", "ollama")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SUBKEY = re.compile(r"^[a-z_]+: ")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A config that cannot be served; the message names each bad key and why."""


def _duration(value: Any) -> Any:
    """Seconds as a number, or a string such as "500ms", "30s", "2m"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("not a duration (use seconds or e.g. 500ms, 30s, 2m)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0, allow_inf_nan=False)]


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not a URL")
    return value


def _address(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not a host:port address")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeoutSettings(_Frozen):
    connect: Seconds = 5.0
    first_byte: Seconds = 60.0
    idle: Seconds = 30.0
    total: Seconds = 600.0


class BreakerSettings(_Frozen):
    """Hapax's circuit_breaker keys. failure_threshold consecutive failures open the breaker; so
    does failure_ratio over the rolling `interval` once min_requests were seen there."""

    max_requests: int = Field(1, ge=1)  # trial requests let through while half-open
    interval: Seconds = 60.0  # rolling window for the failure ratio
    timeout: Seconds = 30.0  # how long the breaker stays open
    failure_threshold: int = Field(5, ge=1)
    failure_ratio: float = Field(1.0, gt=0, le=1)  # 1.0 turns the ratio rule off
    min_requests: int = Field(10, ge=1)


class HealthCheckSettings(_Frozen):
    enabled: bool = True
    interval: Seconds = 15.0
    timeout: Seconds = 5.0
    failure_threshold: int = Field(2, ge=1)
    success_threshold: int = Field(1, ge=1)


class ProviderSettings(_Frozen):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["local", "openai", "azure_openai", "anthropic", "ollama"]
    base_url: str = ""
    api_key_env: str = ""  # the NAME of the environment variable holding the key
    api_key: SecretStr = SecretStr("")  # filled from api_key_env at load; never in the file
    headers: dict[str, str] = {}
    models: dict[str, str] = {}  # logical model -> upstream model; "*" maps any logical name
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    timeouts: TimeoutSettings = TimeoutSettings()
    max_connections: int = Field(100, ge=1)
    options: dict[str, str] = {}
    circuit_breaker: BreakerSettings | None = None  # overrides the global one
    health_check: HealthCheckSettings | None = None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value) if value else value

    @model_validator(mode="after")
    def _azure_needs_its_resource(self) -> ProviderSettings:
        if self.type == "azure_openai" and not self.base_url:
            raise ValueError(
                "base_url: required for azure_openai (https://RESOURCE.openai.azure.com)"
            )
        return self

    def upstream_model(self, logical: str) -> str | None:
        if logical in self.models:
            return self.models[logical]
        wildcard = self.models.get("*")
        if wildcard is None:
            return None
        return logical if wildcard == "*" else wildcard

    def spec(self) -> ProviderSpec:
        t = self.timeouts
        return ProviderSpec(
            name=self.name,
            type=self.type,
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value(),
            headers=dict(self.headers),
            timeouts=Timeouts(t.connect, t.first_byte, t.idle, t.total),
            max_connections=self.max_connections,
            options=dict(self.options),
        )


class ModelSettings(_Frozen):
    # Providers in preference order; an inner list is one rank, spread by provider weight.
    provider_preference: list[str | list[str]] | None = None
    dedup: bool = True


class RetrySettings(_Frozen):
    max_attempts: int = Field(2, ge=1, le=10)  # per provider, counting the first
    initial_backoff: Seconds = 0.05
    max_backoff: Seconds = 2.0
    multiplier: float = Field(2.0, ge=1)
    max_retry_after: Seconds = 10.0  # a longer Retry-After fails over instead of waiting


class RouterSettings(_Frozen):
    default_deadline: Seconds = 60.0  # when the caller sets no gRPC deadline
    retry: RetrySettings = RetrySettings()


class DedupSettings(_Frozen):
    enabled: bool = True
    share_across_callers: bool = False


class ServerSettings(_Frozen):
    address: str = "0.0.0.0:50051"
    grace_period: Seconds = 10.0
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_content_chars: int = Field(1_000_000, ge=1)
    max_messages: int = Field(1024, ge=1)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class MetricsSettings(_Frozen):
    enabled: bool = True
    address: str = "0.0.0.0:9090"
    bearer_token_env: str = ""
    bearer_token: SecretStr = SecretStr("")
    basic_auth_user: str = ""
    basic_auth_password_env: str = ""
    basic_auth_password: SecretStr = SecretStr("")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class LoggingSettings(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    log_content: bool = False  # prompts and completions are not logged unless this is on
    redact_patterns: list[str] = []


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    providers: list[ProviderSettings] = Field(min_length=1)
    provider_preference: list[str | list[str]] | None = None
    default_model: str = Field(min_length=1)
    models: dict[str, ModelSettings] = {}
    router: RouterSettings = RouterSettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    health_check: HealthCheckSettings = HealthCheckSettings()
    dedup: DedupSettings = DedupSettings()

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        names = [p.name for p in self.providers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _KeyError(f"providers[{i}].name", f"duplicate provider name {name!r}")
        known = set(names)
        groups = [("provider_preference", self.provider_preference)] + [
            (f"models.{m}.provider_preference", s.provider_preference)
            for m, s in self.models.items()
        ]
        for where, order in groups:
            for i, entry in enumerate(order or []):
                for name in [entry] if isinstance(entry, str) else entry:
                    if name not in known:
                        raise _KeyError(f"{where}[{i}]", f"unknown provider {name!r}")
        if not self.routes_for(self.default_model):
            raise _KeyError("default_model", f"no provider serves {self.default_model!r}")
        return self

    def preference(self, model: str) -> list[list[str]]:
        """Ranks of provider names for a logical model, best first."""
        override = self.models.get(model)
        order = (override.provider_preference if override else None) or self.provider_preference
        if order is None:
            order = [p.name for p in self.providers]
        return [[entry] if isinstance(entry, str) else list(entry) for entry in order]

    def routes_for(self, model: str) -> list[list[tuple[ProviderSettings, str]]]:
        """(provider, upstream model) ranks that can serve a logical model; empty if none."""
        by_name = {p.name: p for p in self.providers}
        ranks = []
        for rank in self.preference(model):
            routes = [
                (by_name[n], up)
                for n in rank
                if n in by_name and (up := by_name[n].upstream_model(model)) is not None
            ]
            if routes:
                ranks.append(routes)
        return ranks

    def dedup_enabled(self, model: str) -> bool:
        override = self.models.get(model)
        return self.dedup.enabled and (override.dedup if override else True)

    def logical_models(self) -> list[str]:
        names = {m for p in self.providers for m in p.models if m != "*"}
        return sorted(names | set(self.models) | {self.default_model})


class _KeyError(ValueError):
    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[str]") or part.startswith(("function-", "constrained-")):
            continue  # pydantic's union-branch names are not config keys
        else:
            out += f".{part}" if out else part
    return out


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required"
    key = _path(tuple(error["loc"]))
    if message.startswith(
        tuple(f"{k}:" for k in ("providers", "provider_preference", "models", "default_model"))
    ):
        return message  # a model-level check that already names its key
    if key and error["type"] == "value_error" and _SUBKEY.match(message):
        return f"{key}.{message}"  # a check on a section that names one of its own keys
    return f"{key}: {message}" if key else message


def expand_env(node: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string value of the parsed YAML."""
    if isinstance(node, dict):
        return {
            k: expand_env(v, environ, f"{path}.{k}" if path else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, environ, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] or default is None):
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, node)


def _resolve_secrets(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fill api keys and metrics credentials from the environment variables the config names."""
    for i, provider in enumerate(data.get("providers") or []):
        if not isinstance(provider, dict):
            continue
        if "api_key" in provider:
            raise ConfigError(
                f"providers[{i}].api_key: keys are not written in the file; "
                "name an environment variable in api_key_env"
            )
        env = provider.get("api_key_env")
        if env:
            if not environ.get(env):
                raise ConfigError(
                    f"providers[{i}].api_key_env: environment variable {env} is not set"
                )
            provider["api_key"] = environ[env]
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for key in ("bearer_token", "basic_auth_password"):
            env = metrics.get(f"{key}_env")
            if env:
                if not environ.get(env):
                    raise ConfigError(f"metrics.{key}_env: environment variable {env} is not set")
                metrics[key] = environ[env]


def parse(data: Any, environ: Mapping[str, str]) -> Settings:
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping at the top level")
    expanded = expand_env(data, environ)
    _resolve_secrets(expanded, environ)
    try:
        return Settings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(e) for e in exc.errors())) from None


def load(path: str, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, environ)


# Usual environment variables and models for the built-in default.
_DETECTED = (
    (
        "openai",
        "OPENAI_API_KEY",
        {
            "type": "openai",
            "api_key_env": "OPENAI_API_KEY",
            "models": {"default": "gpt-4o-mini", "*": "*"},
        },
    ),
    (
        "anthropic",
        "ANTHROPIC_API_KEY",
        {
            "type": "anthropic",
            "api_key_env": "ANTHROPIC_API_KEY",
            "models": {"default": "claude-haiku-4-5", "*": "*"},
        },
    ),
)


def default_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The built-in config: detected providers first, the local provider last."""
    environ = os.environ if environ is None else environ
    providers: list[dict[str, Any]] = []
    for name, env, body in _DETECTED:
        if environ.get(env):
            providers.append({"name": name, **body})
    if environ.get("OLLAMA_HOST"):
        host = environ["OLLAMA_HOST"]
        providers.append(
            {
                "name": "ollama",
                "type": "ollama",
                "base_url": host if "://" in host else f"http://{host}",
                "models": {"default": environ.get("OLLAMA_MODEL", "llama3.2"), "*": "*"},
            }
        )
    providers.append({"name": "local", "type": "local", "models": {"*": "local"}})
    data: dict[str, Any] = {"providers": providers, "default_model": "default"}
    if environ.get("HAPAX_GRPC_ADDRESS"):
        data["server"] = {"address": environ["HAPAX_GRPC_ADDRESS"]}
    if environ.get("HAPAX_METRICS_ADDRESS"):
        data["metrics"] = {"address": environ["HAPAX_METRICS_ADDRESS"]}
    return parse(data, environ)
