"""The settings a config file becomes: frozen pydantic models, one per section, with the checks
on single fields and sections (durations, URLs, host:port addresses, each provider type's vendor
options); the cross-field checks live in messages.reference_problems. Each provider type is
declared once, in provider_types.py: ProviderType, OPTIONS and DEFAULT_CAPABILITIES here are
read from it, as is the adapter registry.

Imports nothing else of hapaxd but this package; no grpc, no HTTP client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from hapaxd.config.fields import Frozen as _Frozen
from hapaxd.config.fields import Seconds, Text
from hapaxd.config.messages import key_problem, reference_problems
from hapaxd.config.provider_types import (
    IMAGE_URL_CAPABILITIES,
    KIND,
    TYPE_NAMES,
    CapabilityName,
)

# The provider types, in provider_types.KINDS order: a Literal for pydantic, so a bad type is
# "Input should be 'local', 'openai', ..."; mypy cannot read a Literal built at run time.
if TYPE_CHECKING:
    ProviderType = str
else:
    ProviderType = Literal[TYPE_NAMES]
PROVIDER_TYPES: tuple[ProviderType, ...] = TYPE_NAMES

# What each type's models can do unless a provider declares its own.
DEFAULT_CAPABILITIES: Mapping[ProviderType, tuple[CapabilityName, ...]] = {
    name: kind.capabilities for name, kind in KIND.items()
}


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


# Vendor options: each provider type's schema (provider_types.py), in PROVIDER_TYPES order.
OPTIONS: Mapping[ProviderType, type[_Frozen]] = {name: kind.options for name, kind in KIND.items()}


def _unknown_option(kind: ProviderType, key: Any, value: Any) -> InitErrorDetails:
    why = PydanticCustomError("unknown_option", "unknown option for type {type}", {"type": kind})
    return {"type": why, "loc": (str(key),), "input": value}


def vendor_options(kind: ProviderType, raw: Any) -> dict[str, str]:
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
    type: ProviderType
    base_url: str = ""
    api_key_env: str = ""  # the NAME of the environment variable holding the key
    api_key: SecretStr = SecretStr("")  # filled from api_key_env at load; never in the file
    # The type's secret file (provider_types.SecretFile), read from the option naming it at load.
    credentials: SecretStr = SecretStr("")
    headers: dict[str, str] = {}
    models: dict[str, str] = {}  # logical model -> upstream model; "*" maps any logical name
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    timeouts: TimeoutSettings = TimeoutSettings()
    max_connections: int = Field(100, ge=1)
    options: dict[str, str] = {}  # checked against the type's schema (OPTIONS above)
    circuit_breaker: BreakerSettings | None = None  # overrides the global one
    health_check: HealthCheckSettings | None = None
    # What this provider's models can do; None: its type's DEFAULT_CAPABILITIES.
    capabilities: list[CapabilityName] | None = None
    # Per logical model (a key of `models`), overriding `capabilities` for that model.
    model_capabilities: dict[str, list[CapabilityName]] = {}

    def capabilities_of(self, logical: str) -> frozenset[str]:
        """What this provider can do for a logical model it serves."""
        names = self.model_capabilities.get(logical)
        if names is None:
            names = self.capabilities
        if names is None:
            names = list(DEFAULT_CAPABILITIES[self.type])
        # Able to take images, it takes them by the URL schemes its type takes (none: inline
        # images only; provider_types.py): the type's, not a setting.
        if "images" in names:
            schemes = KIND[self.type].image_url_schemes
            return frozenset((*names, *(IMAGE_URL_CAPABILITIES[s] for s in schemes)))
        return frozenset(names)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value) if value else value

    @field_validator("options", mode="before")
    @classmethod
    def _check_options(cls, value: Any, info: ValidationInfo) -> Any:
        kind: ProviderType | None = info.data.get("type")  # absent when the type was bad
        if kind is None:
            return {}  # the type itself is reported; its options cannot be judged
        return vendor_options(kind, value)

    @model_validator(mode="after")
    def _capabilities_name_served_models(self) -> ProviderSettings:
        if "*" in self.models:
            return self
        for logical in self.model_capabilities:
            if logical not in self.models:
                raise key_problem(
                    "model_capabilities", f"{logical!r} is not one of this provider's models"
                )
        return self

    @model_validator(mode="after")
    def _required_options(self) -> ProviderSettings:
        """Options a type cannot do without (vertex: project, location, credentials_file) when
        `options` was left out altogether (given, its schema names each one missing)."""
        schema = OPTIONS[self.type]
        missing = [
            name
            for name, field in schema.model_fields.items()
            if field.is_required() and name not in self.options
        ]
        if missing:
            raise key_problem("options", f"{self.type} requires {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _base_url_when_required(self) -> ProviderSettings:
        example = KIND[self.type].base_url_example  # azure_openai: its resource
        if example and not self.base_url:
            raise key_problem("base_url", f"required for {self.type} ({example})")
        return self


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


class TlsSettings(_Frozen):
    """A listener's certificate and key (PEM files), re-read when they change, and for mutual
    TLS the CA that client certificates must chain to."""

    cert_file: Text
    key_file: Text
    client_ca_file: str = ""  # set: clients present certificates signed by this CA
    require_client_cert: bool = True  # with client_ca_file: a client without one is refused


class ServerSettings(_Frozen):
    """The gRPC listener and the limits every caller is held to (README "Limits")."""

    address: str = "0.0.0.0:50051"
    grace_period: Seconds = 10.0
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_content_chars: int = Field(1_000_000, ge=1)
    max_messages: int = Field(1024, ge=1)
    max_tools: int = Field(128, ge=0)  # tools declared in one request
    max_schema_bytes: int = Field(64 * 1024, ge=64)  # each tool's parameters, the answer schema
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=0)  # inline image bytes in one request
    max_vendor_option_bytes: int = Field(16 * 1024, ge=0)  # a request's vendor_options as JSON
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
    # hapax.v1 calls in flight in the whole gateway; past it new ones are shed (UNAVAILABLE
    # OVERLOADED with RetryInfo) before any work. None: no cap.
    max_in_flight: int | None = Field(20_000, ge=1)
    keepalive: KeepaliveSettings = KeepaliveSettings()
    tls: TlsSettings | None = None  # None: plaintext (h2c)
    # Worker processes sharing the ports (README "Running in production"): 1 is one process;
    # "auto" one per core this process may use (its CPU affinity and cgroup CPU limit).
    workers: int | Literal["auto"] = 1

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("a number of worker processes from 1 to 256, or auto")
        return value

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
    tls: TlsSettings | None = None  # None: plain HTTP

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class OpenAIHttpSettings(_Frozen):
    """The OpenAI-compatible HTTP door: /v1/chat/completions, /v1/embeddings and /v1/models on a
    port of their own, through the same router, keys and limits as gRPC callers."""

    enabled: bool = False
    address: str = "0.0.0.0:8080"
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # larger request bodies get 413
    tls: TlsSettings | None = None  # None: plain HTTP

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class LoggingSettings(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    log_content: bool = False  # prompts and completions are not logged unless this is on
    redact_patterns: list[str] = []


_KEY_ID = r"^[A-Za-z0-9_.:@-]{1,64}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Who may call a service other than CompletionService (health is always open): anyone, any valid
# key, or only keys with `admin: true`.
Access = Literal["open", "any_key", "admin"]


class KeySettings(_Frozen):
    """One API key: its id (what logs, metrics, traces and deduplication see), the SHA-256 of the
    key itself, and its policy. The key comes in one of three ways: `sha256` written in the file
    (`hapaxd hash-key` makes one), or the key itself in the environment variable `key_env` names,
    or in the file `key_file` names (a mounted Kubernetes Secret); those two are hashed at load
    and the key is not kept."""

    id: str = Field(pattern=_KEY_ID)
    owner: str = ""  # the owning team, a label for operators
    sha256: str = ""  # hex digest of the key
    key_env: str = ""
    key_file: str = ""
    # A mutual-TLS caller whose client certificate has this subject (as grpc reports it, e.g.
    # "CN=billing,O=acme") or this subject alternative name (a DNS name, or a SPIFFE ID such as
    # spiffe://cluster.local/ns/billing/sa/api) is this key, with no bearer key needed.
    client_cert_subject: str = ""
    client_cert_san: str = ""
    admin: bool = False  # may call AdminService (and reflection) where those ask for admin
    models: list[Text] = Field(["*"], min_length=1)  # logical models it may use, glob patterns
    metadata_keys: list[Text] | None = None  # request `metadata` keys it may send; None: any
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_concurrent_streams: int | None = Field(None, ge=1)
    # May its callers bypass the response cache (cache-control no-cache, no-store)? When not,
    # those directives are ignored for it.
    cache_bypass: bool = True

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not _SHA256.match(value):
            raise ValueError("not a SHA-256 hex digest (64 hex digits; hapaxd hash-key makes one)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> KeySettings:
        # sources.fill_secrets has hashed a key_env or key_file key into sha256 (and refused a
        # key with two sources); with secrets unchecked, such a key's digest stays empty.
        if not (
            self.sha256
            or self.key_env
            or self.key_file
            or self.client_cert_subject
            or self.client_cert_san
        ):
            raise key_problem(
                "sha256", "required (or key_env, key_file, client_cert_subject, client_cert_san)"
            )
        return self


class AuthSettings(_Frozen):
    """Who may call the gateway. On unless turned off; on with no keys is a config error
    (Settings checks it), so a gateway never serves everyone by accident. The health service is
    always open."""

    enabled: bool = True
    keys: list[KeySettings] = []
    reflection: Access = "open"  # the schema only; grpcurl needs it
    admin_service: Access = "admin"

    @model_validator(mode="after")
    def _unique_ids(self) -> AuthSettings:
        seen: set[str] = set()
        for i, key in enumerate(self.keys):
            if key.id in seen:
                raise key_problem(f"keys[{i}].id", f"{key.id!r} is used by an earlier key")
            seen.add(key.id)
        return self


class RedisConnection(_Frozen):
    """Where a kind of shared state lives: this process ("local"), or a Redis shared by every
    replica. What rate limits, budgets and the response cache each take."""

    backend: Literal["local", "redis"] = "local"
    redis_url: str = ""  # redis://host:6379/0 or rediss://; no password here
    redis_password_env: str = ""  # the NAME of the environment variable holding it
    redis_password: SecretStr = SecretStr("")  # filled from redis_password_env at load
    redis_timeout: Seconds = 0.1  # per round trip; slower counts as unreachable
    key_prefix: Text = "hapax:"

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError("not a Redis URL (redis://host:6379/0, rediss://..., unix://path)")
        if parts.password:
            raise ValueError("no password in the URL; name its variable in redis_password_env")
        return value

    @model_validator(mode="after")
    def _redis_needs_its_url(self) -> Self:
        if self.backend == "redis" and not self.redis_url:
            raise key_problem("redis_url", "required for backend redis")
        return self


class SharedStore(RedisConnection):
    """A store admissions ask (one server-side script per admission in Redis)."""

    # When Redis cannot be asked: "open" admits the call unchecked, "closed" refuses it
    # (UNAVAILABLE); either way it is counted and logged.
    on_store_error: Literal["open", "closed"] = "open"


class RateLimitSettings(SharedStore):
    """Where the per-key buckets live: this process ("local"), or a Redis shared by every
    replica, asked once per admission through a server-side script. Fail open by default
    (RATE_LIMITER_UNAVAILABLE when closed)."""

    key_prefix: Text = "hapax:rl:"


class ReloadSettings(_Frozen):
    """Reloading the config file without a restart: on SIGHUP always, and when the file changes
    if `watch` is on (its identity polled every `watch_interval`)."""

    watch: bool = True
    watch_interval: Seconds = 1.0


class PriceSettings(_Frozen):
    """One model's price, in units of `prices.currency` per 1,000,000 tokens."""

    prompt: Decimal = Field(ge=0, allow_inf_nan=False)
    completion: Decimal = Field(ge=0, allow_inf_nan=False)
    cached_prompt: Decimal | None = Field(None, ge=0, allow_inf_nan=False)  # None: prompt's
    embedding: Decimal | None = Field(None, ge=0, allow_inf_nan=False)  # None: prompt's


class PricesSettings(_Frozen):
    """What calls cost: `models` (keyed by upstream model, "provider/model" or a glob pattern)
    over the table shipped with hapaxd (costs/default_prices.yaml, in USD) unless `defaults` is
    off. A model with no price is unpriced: its calls have no cost, never a cost of zero."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    defaults: bool = True
    models: dict[Text, PriceSettings] = {}

    @model_validator(mode="after")
    def _defaults_are_usd(self) -> PricesSettings:
        if self.defaults and self.currency != "USD":
            raise ValueError(
                f"the default price table is in USD, not {self.currency}: set prices.defaults: "
                "false and price every model in prices.models"
            )
        return self


class EnergyFigureSettings(_Frozen):
    joules_per_prompt_token: float = Field(ge=0, allow_inf_nan=False)
    joules_per_completion_token: float = Field(ge=0, allow_inf_nan=False)


class EnergySettings(_Frozen):
    """Energy per call: `models` (keys as for prices) over the shipped estimates
    (costs/default_energy.yaml) unless `defaults` is off."""

    defaults: bool = True
    models: dict[Text, EnergyFigureSettings] = {}


class BudgetSettings(_Frozen):
    """One budget: a cap on what one key (`key`: its id) or one team (`team`: the keys whose
    `owner` it is) spends per UTC `window`, in money (`money`, in prices.currency) or tokens
    (`tokens`, prompt plus completion)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    key: str | None = None
    team: str | None = None
    money: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    tokens: int | None = Field(None, ge=1)
    window: Literal["day", "week", "month", "total"] = "month"

    @model_validator(mode="after")
    def _one_of_each(self) -> BudgetSettings:
        if (self.key is None) == (self.team is None):
            raise ValueError(f"budget {self.name!r}: give exactly one of key and team")
        if (self.money is None) == (self.tokens is None):
            raise ValueError(f"budget {self.name!r}: give exactly one of money and tokens")
        return self


class BudgetsSettings(SharedStore):
    """Budgets, enforced when a call is admitted (admission/budgets.py). A call reserves its
    worst case: its prompt's estimate plus `max_tokens` (or `default_max_tokens` when it sets
    none), at the dearest price among the providers of its model; the real cost replaces the
    reservation when it ends. Their spend is kept by this process ("local") or in a Redis every
    replica shares (admission/redis_budgets.py); when that Redis cannot be asked, budgeted calls
    are refused by default (BUDGETS_UNAVAILABLE; "open" admits them unchecked and charges them
    once it answers again)."""

    key_prefix: Text = "hapax:budget:"
    redis_timeout: Seconds = 0.25
    on_store_error: Literal["open", "closed"] = "closed"

    default_max_tokens: int = Field(4096, ge=1)
    limits: list[BudgetSettings] = []

    @model_validator(mode="after")
    def _unique_names(self) -> BudgetsSettings:
        names = [b.name for b in self.limits]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"budget names must be unique: {', '.join(twice)} twice")
        return self


class LedgerSettings(_Frozen):
    """The usage ledger: one row per call that reached a provider, written in batches off the
    call path (ledger/), to SQLite (`path` "": usage.db in the state directory, $HAPAX_STATE_DIR,
    else $XDG_STATE_HOME/hapax, else ~/.local/state/hapax) or to PostgreSQL, which several
    replicas share (`postgres_url`, its password in the variable `postgres_password_env`
    names). The spool beside `path` (usage.db.spool) keeps rows the database could not take
    yet. Changing a ledger setting takes a restart."""

    enabled: bool = True
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = ""
    postgres_url: str = ""  # postgresql://user@host:5432/db; no password here
    postgres_password_env: str = ""  # the NAME of the environment variable holding it
    postgres_password: SecretStr = SecretStr("")  # filled from postgres_password_env at load
    batch_size: int = Field(500, ge=1, le=100_000)
    flush_interval: Seconds = 1.0
    queue_limit: int = Field(10_000, ge=1)
    spool_limit_bytes: int = Field(64 * 1024 * 1024, ge=0)
    retention_days: int | None = Field(90, ge=1)  # raw rows; daily rollups are kept

    @field_validator("postgres_url")
    @classmethod
    def _check_postgres_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
            raise ValueError("not a PostgreSQL URL (postgresql://user@host:5432/database)")
        if parts.password:
            raise ValueError("no password in the URL; name its variable in postgres_password_env")
        return value

    @model_validator(mode="after")
    def _postgres_needs_its_url(self) -> LedgerSettings:
        if self.backend == "postgres" and not self.postgres_url:
            raise key_problem("postgres_url", "required for backend postgres")
        return self


class SemanticCacheSettings(_Frozen):
    """The semantic cache of one model: a request whose text embeds (with `embedding_model`,
    through the gateway's own router) within `threshold` cosine similarity of a stored one, in
    the same scope and with the same non-text settings, is answered with its entry."""

    embedding_model: str = Field(min_length=1)
    threshold: float = Field(0.95, gt=0, le=1)
    text: Literal["last_user", "conversation"] = "last_user"  # what is embedded
    max_entries: int = Field(10_000, ge=1)  # per gateway process; the oldest go first


class ModelCacheSettings(_Frozen):
    """The response cache of one logical model (or a glob of them)."""

    ttl: Seconds | None = None  # None: cache.ttl
    # Who shares entries: each key ("key"), the keys of one owner ("team"), or everyone
    # ("global", the only way entries cross tenants).
    scope: Literal["key", "team", "global"] = "key"
    sampled: bool | None = None  # None: cache.sampled
    semantic: SemanticCacheSettings | None = None


class CacheSettings(RedisConnection):
    """The response cache (cache/): off unless `models` names some. Entries live in this
    process (`backend: local`, at most `max_bytes`, least recently used evicted first) or in a
    Redis the replicas share."""

    models: dict[str, ModelCacheSettings] = {}  # logical model name or glob -> its cache
    keys: list[Text] = Field(["*"], min_length=1)  # key ids (globs) whose calls use the cache
    ttl: Seconds = 3600.0
    sampled: bool = False  # store sampled answers too (temperature unset or above 0, no seed)
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    max_entry_bytes: int = Field(4 * 1024 * 1024, ge=1)  # a bigger answer is not stored
    key_prefix: Text = "hapax:cache:"
    redis_timeout: Seconds = 0.05
    # With backend redis: how long this process keeps a near copy of an entry it wrote or read
    # (bounded by max_bytes), so a repeated hit asks Redis nothing; 0 asks Redis every time.
    near_ttl: float = Field(5.0, ge=0)


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    openai_http: OpenAIHttpSettings = OpenAIHttpSettings()
    providers: list[ProviderSettings] = Field(min_length=1)
    provider_preference: list[str | list[str]] | None = None
    default_model: str = Field(min_length=1)
    # The model an embedding request gets when it names none; None: default_model.
    default_embedding_model: str | None = Field(None, min_length=1)
    models: dict[str, ModelSettings] = {}
    router: RouterSettings = RouterSettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    health_check: HealthCheckSettings = HealthCheckSettings()
    dedup: DedupSettings = DedupSettings()
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    reload: ReloadSettings = ReloadSettings()
    prices: PricesSettings = PricesSettings()
    energy: EnergySettings = EnergySettings()
    ledger: LedgerSettings = LedgerSettings()
    budgets: BudgetsSettings = BudgetsSettings()
    cache: CacheSettings = CacheSettings()

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        problems = reference_problems(
            [(p.name, p.models) for p in self.providers],
            self.provider_preference,
            {m: s.provider_preference for m, s in self.models.items()},
            self.default_model,
        )
        embedding = self.default_embedding_model
        if embedding and not any(embedding in p.models or "*" in p.models for p in self.providers):
            problems.append(f"default_embedding_model: no provider serves {embedding!r}")
        if self.auth.enabled and not self.auth.keys:  # Settings' check: AuthSettings() is valid
            problems.append(
                "auth.keys: no API keys while auth is enabled: add keys (hapaxd hash-key makes "
                "one), or set auth.enabled: false to serve every caller that reaches the port"
            )
        problems += self._budget_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _budget_problems(self) -> list[str]:
        """Each budget names a key or a team the config has, and budgets need auth on."""
        if not self.budgets.limits:
            return []
        if not self.auth.enabled:
            return ["budgets: a budget counts a key's calls; it takes auth.enabled: true"]
        ids = {k.id for k in self.auth.keys}
        teams = {k.owner for k in self.auth.keys if k.owner}
        problems = []
        for i, budget in enumerate(self.budgets.limits):
            if budget.key is not None and budget.key not in ids:
                problems.append(f"budgets.limits[{i}].key: no key has the id {budget.key!r}")
            if budget.team is not None and budget.team not in teams:
                problems.append(f"budgets.limits[{i}].team: no key has the owner {budget.team!r}")
        return problems

    def dedup_enabled(self, model: str) -> bool:
        override = self.models.get(model)
        return self.dedup.enabled and (override.dedup if override else True)

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
        if self.rate_limit.redis_password_env:
            found.append(("rate_limit.redis_password_env", self.rate_limit.redis_password_env))
        if self.ledger.postgres_password_env:
            found.append(("ledger.postgres_password_env", self.ledger.postgres_password_env))
        if self.budgets.redis_password_env:
            found.append(("budgets.redis_password_env", self.budgets.redis_password_env))
        if self.cache.redis_password_env:
            found.append(("cache.redis_password_env", self.cache.redis_password_env))
        found += [
            (f"auth.keys[{i}].key_env", k.key_env)
            for i, k in enumerate(self.auth.keys)
            if k.key_env
        ]
        return found
