"""Gateway configuration: a YAML file with ${VAR} / ${VAR:-default} expansion, validated into
frozen settings at start. Every problem is reported at once, one line each naming the exact key
(`providers[1].base_url: not a URL`): unset variables, bad values (vendor options included, each
provider type has a small schema of its own) and cross-field checks.

With no file, `default_settings(environ)` serves the local provider plus any provider whose usual
environment variable is set. Imports nothing from grpc or the HTTP client.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

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
Delay = Annotated[float, BeforeValidator(_duration), Field(ge=0, allow_inf_nan=False)]


def _text(value: Any) -> Any:
    """YAML reads an unquoted 2024-10-21 as a date; a version option means the text."""
    return value.isoformat() if isinstance(value, datetime.date) else value


Text = Annotated[str, StringConstraints(min_length=1)]
Version = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_text)]


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
    """Hapax's circuit_breaker keys. failure_threshold consecutive failures open the breaker. When
    failure_ratio is set, so does a share of failures of at least failure_ratio among the outcomes
    of the rolling `interval`, once min_requests were seen there; unset (the default), the ratio
    rule is off and only the consecutive count opens it."""

    max_requests: int = Field(1, ge=1)  # trial requests let through while half-open
    interval: Seconds = 60.0  # rolling window for the failure ratio
    timeout: Seconds = 30.0  # how long the breaker stays open
    failure_threshold: int = Field(5, ge=1)
    failure_ratio: float | None = Field(None, gt=0, le=1)  # None: the ratio rule is off
    min_requests: int = Field(10, ge=1)  # outcomes in the interval before the ratio applies


class HealthCheckSettings(_Frozen):
    enabled: bool = True
    interval: Seconds = 15.0
    timeout: Seconds = 5.0
    failure_threshold: int = Field(2, ge=1)
    success_threshold: int = Field(1, ge=1)


# Vendor options, one small schema per provider type. A key left out (or null) means the adapter's
# own default, which lives in the adapter; the values reach it as normalised text.


class LocalOptions(_Frozen):
    chunk_delay: Delay | None = None  # between streamed words, to mimic a slow model; 0 default


class OpenAIOptions(_Frozen):
    # The o-series models take max_completion_tokens instead of max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None


class AzureOpenAIOptions(OpenAIOptions):
    api_version: Version | None = None
    deployment: Text | None = None  # default: the upstream model name


class AnthropicOptions(_Frozen):
    anthropic_version: Version | None = None  # the anthropic-version header
    default_max_tokens: int | None = Field(None, ge=1)  # when the caller sets no max_tokens


class OllamaOptions(_Frozen):
    """No vendor options yet."""


OPTIONS: dict[str, type[_Frozen]] = {
    "local": LocalOptions,
    "openai": OpenAIOptions,
    "azure_openai": AzureOpenAIOptions,
    "anthropic": AnthropicOptions,
    "ollama": OllamaOptions,
}


def _unknown_option(kind: str, key: Any, value: Any) -> InitErrorDetails:
    why = PydanticCustomError("unknown_option", "unknown option for type {type}", {"type": kind})
    return {"type": why, "loc": (str(key),), "input": value}


def vendor_options(kind: str, raw: Any) -> dict[str, str]:
    """A provider's options checked against its type's schema, every bad key at once; values come
    back as text, normalised (a duration in seconds), since adapters read plain strings."""
    if not isinstance(raw, dict):
        raise ValueError("not a mapping of option names to values")
    schema = OPTIONS[kind]
    errors = [_unknown_option(kind, k, v) for k, v in raw.items() if k not in schema.model_fields]
    try:
        parsed = schema.model_validate({k: v for k, v in raw.items() if k in schema.model_fields})
    except ValidationError as exc:
        errors += [
            {"type": e["type"], "loc": e["loc"], "input": e["input"], "ctx": e.get("ctx", {})}
            for e in exc.errors()
        ]
    if errors:
        order = {str(k): i for i, k in enumerate(raw)}
        errors.sort(key=lambda e: order.get(str(e["loc"][0]) if e["loc"] else "", 0))
        # Raised inside a validator, pydantic files these under the options key.
        raise ValidationError.from_exception_data(schema.__name__, errors)
    return {k: str(v) for k, v in parsed if k in parsed.model_fields_set and v is not None}


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
    options: dict[str, str] = {}  # checked against the type's schema (OPTIONS above)
    circuit_breaker: BreakerSettings | None = None  # overrides the global one
    health_check: HealthCheckSettings | None = None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value) if value else value

    @field_validator("options", mode="before")
    @classmethod
    def _check_options(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind not in OPTIONS:
            return {}  # the type itself is reported; its options cannot be judged
        return vendor_options(kind, value)

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
    """Which identical in-flight requests share one upstream call.

    By default only requests from the same credential that ask for a deterministic answer
    (temperature 0) share; anonymous callers never do.
    """

    enabled: bool = True
    # Everyone shares, anonymous callers included, instead of one credential with itself.
    share_across_callers: bool = False
    # Sampled requests (temperature unset or above 0) share too: identical prompts then get one
    # sample between them instead of independent ones.
    sampled: bool = False


class KeepaliveSettings(_Frozen):
    """HTTP/2 keepalive: the server's own pings find dead peers; a client that pings more often
    than `min_ping_interval` with no call in flight earns a strike, and after `max_ping_strikes`
    its connection is closed with GOAWAY (ENHANCE_YOUR_CALM)."""

    time: Seconds = 60.0  # the server pings a connection silent for this long
    timeout: Seconds = 20.0  # and closes it when the ping is not answered within this
    min_ping_interval: Seconds = 10.0  # the shortest client ping interval allowed without data
    max_ping_strikes: int = Field(2, ge=0)  # 0: never close for pinging too often
    permit_without_calls: bool = True  # client pings on a connection with no call are allowed
    max_pings_without_data: int = Field(0, ge=0)  # server pings with no data between; 0: any


class ServerSettings(_Frozen):
    """The gRPC listener and the limits every caller is held to (README "Limits")."""

    address: str = "0.0.0.0:50051"
    grace_period: Seconds = 10.0
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_content_chars: int = Field(1_000_000, ge=1)
    max_messages: int = Field(1024, ge=1)
    max_metadata_bytes: int = Field(16 * 1024, ge=1024)  # request headers of one call
    max_concurrent_streams: int = Field(1000, ge=1)  # calls in flight on one connection
    # Calls accepted by the transport but not yet handed to Python (a burst of new calls waits
    # here while the event loop takes them one by one); past this grpc core refuses some new
    # calls, past twice this all of them. grpc's own default, 1000, refused a burst of 4,000.
    max_pending_calls: int = Field(10_000, ge=1)
    max_connection_idle: Seconds | None = 300.0  # a connection with no call is closed (GOAWAY)
    max_connection_age: Seconds | None = 1800.0  # then GOAWAY, so clients rebalance
    max_connection_age_grace: Seconds = 300.0  # calls in flight get this long to finish after
    handshake_timeout: Seconds = 10.0  # a connection that sends no HTTP/2 preface is dropped
    keepalive: KeepaliveSettings = KeepaliveSettings()

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
        problems = reference_problems(
            [(p.name, p.models) for p in self.providers],
            self.provider_preference,
            {m: s.provider_preference for m, s in self.models.items()},
            self.default_model,
        )
        if problems:
            raise ValueError("\n".join(problems))
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

    def secret_env(self) -> list[tuple[str, str]]:
        """(key, environment variable) for each secret this config reads from the environment."""
        found = [
            (f"providers[{i}].api_key_env", p.api_key_env)
            for i, p in enumerate(self.providers)
            if p.api_key_env
        ]
        if self.metrics.bearer_token_env:
            found.append(("metrics.bearer_token_env", self.metrics.bearer_token_env))
        if self.metrics.basic_auth_password_env:
            found.append(("metrics.basic_auth_password_env", self.metrics.basic_auth_password_env))
        return found


def _entries(order: Sequence[Any]) -> Iterator[tuple[str, str]]:
    """(index suffix, provider name) of a preference list; an inner list is one rank. Entries
    that are not names are skipped: the schema reports them."""
    for i, entry in enumerate(order):
        if isinstance(entry, list):
            yield from ((f"[{i}][{j}]", n) for j, n in enumerate(entry) if isinstance(n, str))
        elif isinstance(entry, str):
            yield f"[{i}]", entry


def reference_problems(
    providers: Sequence[tuple[str | None, Collection[Any] | None]],
    preference: Sequence[Any] | None,
    overrides: Mapping[str, Sequence[Any] | None],
    default_model: str | None,
) -> list[str]:
    """The cross-field checks, one line per problem, on plain values so they also run on a file
    whose other keys are bad. `providers` is (name, logical models it maps) in file order; None
    for what could not be read, and a provider whose models are unknown is taken to serve all.

    Provider names are unique; every name in a preference list is a provider that serves the
    model(s) that list routes; something serves the default model.
    """
    problems: list[str] = []
    models_of: dict[str, Collection[Any] | None] = {}
    for i, (name, models) in enumerate(providers):
        if name is None:
            continue
        if name in models_of:
            problems.append(f"providers[{i}].name: duplicate provider name {name!r}")
        else:
            models_of[name] = models

    def serves(name: str, *wanted: str) -> bool:
        """Whether the provider maps any of the wanted models (a "*" maps every name)."""
        models = models_of[name]
        return models is None or "*" in models or any(m in models for m in wanted)

    own_list = {m for m, order in overrides.items() if order}
    declared = {m for models in models_of.values() for m in models or () if isinstance(m, str)}
    declared |= set(overrides) | ({default_model} if default_model else set())
    # The global list routes every logical model without a list of its own (and, through a "*"
    # mapping, names no one declared).
    routed = sorted(declared - own_list - {"*"})
    for key, name in _entries(preference or []):
        where = f"provider_preference{key}"
        if name not in models_of:
            problems.append(f"{where}: unknown provider {name!r}")
        elif not serves(name, *routed):
            models = ", ".join(routed) if routed else "none: each model has its own list"
            problems.append(
                f"{where}: provider {name!r} serves none of the models this list routes ({models})"
            )
    for model, order in overrides.items():
        for key, name in _entries(order or []):
            where = f"models.{model}.provider_preference{key}"
            if name not in models_of:
                problems.append(f"{where}: unknown provider {name!r}")
            elif not serves(name, model):
                problems.append(f"{where}: provider {name!r} does not serve model {model!r}")
    if default_model:
        order = overrides.get(default_model) or preference or list(models_of)
        if not any(n in models_of and serves(n, default_model) for _, n in _entries(order)):
            problems.append(f"default_model: no provider serves {default_model!r}")
    return problems


def _raw_reference_problems(data: Mapping[str, Any]) -> list[str]:
    """reference_problems() on the expanded file, read leniently, for when Settings could not be
    built because other keys are bad (so the validator above never ran)."""
    raw = data.get("providers")
    if not isinstance(raw, list) or not raw:
        return []  # reported as required; nothing to cross-check
    providers: list[tuple[str | None, Collection[Any] | None]] = []
    for entry in raw:
        body = entry if isinstance(entry, dict) else {}
        name, models = body.get("name"), body.get("models", {})
        providers.append(
            (name if isinstance(name, str) else None, models if isinstance(models, dict) else None)
        )
    overrides: dict[str, Sequence[Any] | None] = {}
    raw_models = data.get("models")
    for model, body in raw_models.items() if isinstance(raw_models, dict) else ():
        order = body.get("provider_preference") if isinstance(body, dict) else None
        overrides[str(model)] = order if isinstance(order, list) else None
    preference = data.get("provider_preference")
    default = data.get("default_model")
    return reference_problems(
        providers,
        preference if isinstance(preference, list) else None,
        overrides,
        default if isinstance(default, str) and default else None,
    )


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
    """Replace ${VAR} and ${VAR:-default} in every string value of the parsed YAML; ConfigError
    naming every unset variable."""
    missing: list[tuple[str, str]] = []
    expanded = _expand(node, environ, path, missing)
    if missing:
        raise ConfigError("\n".join(line for _, line in missing))
    return expanded


def _expand(
    node: Any, environ: Mapping[str, str], path: str, missing: list[tuple[str, str]]
) -> Any:
    """expand_env's walk: an unset ${VAR} stays as written and is noted as (key, problem)."""
    if isinstance(node, dict):
        return {
            k: _expand(v, environ, f"{path}.{k}" if path else str(k), missing)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand(v, environ, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] or default is None):
            return environ[name]
        if default is not None:
            return default
        missing.append((path, f"{path}: environment variable {name} is not set"))
        return match.group(0)

    return _ENV_REF.sub(substitute, node)


def _resolve_secrets(
    data: dict[str, Any], environ: Mapping[str, str], problems: list[str], *, secrets: bool
) -> None:
    """Fill api keys and metrics credentials from the environment variables the config names.
    With secrets=False an unset variable is no problem (the key stays empty)."""

    def secret(key: str, env: str) -> str | None:
        if environ.get(env):
            return environ[env]
        if secrets:
            problems.append(f"{key}: environment variable {env} is not set")
        return None

    providers = data.get("providers")
    for i, provider in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(provider, dict):
            continue
        if "api_key" in provider:
            problems.append(
                f"providers[{i}].api_key: keys are not written in the file; "
                "name an environment variable in api_key_env"
            )
            del provider["api_key"]
        env = provider.get("api_key_env")
        if env and isinstance(env, str) and (value := secret(f"providers[{i}].api_key_env", env)):
            provider["api_key"] = value
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for key in ("bearer_token", "basic_auth_password"):
            env = metrics.get(f"{key}_env")
            if env and isinstance(env, str) and (value := secret(f"metrics.{key}_env", env)):
                metrics[key] = value


def _under(line: str, keys: Collection[str]) -> bool:
    return any(line.startswith((f"{k}:", f"{k}.", f"{k}[")) for k in keys)


def parse(data: Any, environ: Mapping[str, str], *, secrets: bool = True) -> Settings:
    """Settings from the parsed YAML, or one ConfigError with a line per problem: unset
    environment variables, bad keys and cross-field checks, all at once. secrets=False checks
    everything but that the secret environment variables (api_key_env, ...) are set."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping at the top level")
    missing: list[tuple[str, str]] = []
    expanded = _expand(data, environ, "", missing)
    problems = [line for _, line in missing]
    _resolve_secrets(expanded, environ, problems, secrets=secrets)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        errors = exc.errors()
        found = [line for e in errors for line in _describe(e).splitlines()]
        if all(e["loc"] for e in errors):  # a field failed, so Settings' own checks never ran
            found += _raw_reference_problems(expanded)
        # A key whose ${VAR} is unset is reported once, as that, not again as a bad value.
        unexpanded = {key for key, _ in missing}
        problems += [line for line in dict.fromkeys(found) if not _under(line, unexpanded)]
        raise ConfigError("\n".join(problems)) from None
    if problems:
        raise ConfigError("\n".join(problems))
    return settings


def load(path: str, environ: Mapping[str, str] | None = None, *, secrets: bool = True) -> Settings:
    environ = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, environ, secrets=secrets)


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
