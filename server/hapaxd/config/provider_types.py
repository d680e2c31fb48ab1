"""Every provider type, declared once: its name, its vendor option schema, what its models can do
by default, whether it takes images by URL, the wire format whose `vendor_options` it reads (and
the body fields that wire's adapters set themselves), a base_url it cannot do without, how
the built-in default config detects it, and the secrets it reads from elsewhere than the config
(a file its options name, the environment its own library reads). config/schema.py (ProviderType,
OPTIONS, the capability defaults), config/sources.py (detection, secret files), core/types.py
(VENDOR_WIRES), core/validation.py (RESERVED_OPTIONS) and providers/registry.py all read KINDS;
the adapter itself is the one line per type in providers/registry.py.

Adding a vendor: its options model and one ProviderKind in KINDS here, its adapter module and
one line in providers/registry.py (tests/unit/test_provider_isolation.py fails if any other
module names it).

Imports nothing else of hapaxd but this package.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field

from hapaxd.config.fields import Delay, Frozen, Text, Version

# What a provider's models can do (core.types.Capability).
CapabilityName = Literal["streaming", "tools", "images", "json_schema", "embeddings"]
CAPABILITIES: tuple[CapabilityName, ...] = typing.get_args(CapabilityName)
# The URL schemes an image may be given by, and the capability (implied by `images` and the
# provider's type, not a setting) that a provider taking that scheme has.
IMAGE_URL_CAPABILITIES: Mapping[str, str] = {
    "https": "image_urls",  # fetched by the provider
    "s3": "image_s3_uris",  # s3://BUCKET/KEY, read from Amazon S3 by the provider
    "gs": "image_gs_uris",  # gs://BUCKET/OBJECT, read from Cloud Storage by the provider
}

# Vendor options, one small schema per provider type. A key left out (or null) means the adapter's
# own default, which lives in the adapter; the values reach it as normalised text.


class LocalOptions(Frozen):
    chunk_delay: Delay | None = None  # between streamed words, to mimic a slow model; 0 default


class OpenAIOptions(Frozen):
    # The o-series models take max_completion_tokens instead of max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None


class AzureOpenAIOptions(OpenAIOptions):
    api_version: Version | None = None
    deployment: Text | None = None  # default: the upstream model name


class AnthropicOptions(Frozen):
    anthropic_version: Version | None = None  # the anthropic-version header
    default_max_tokens: int | None = Field(None, ge=1)  # when the caller sets no max_tokens


class OllamaOptions(Frozen):
    """No vendor options yet."""


class GeminiOptions(Frozen):
    """No vendor options yet: the API version is base_url's (.../v1beta by default, or .../v1),
    and safety settings are per request (`vendor_options {"gemini": {"safetySettings": ...}}`)."""


class VertexOptions(Frozen):
    """Vertex AI's Gemini models: the project and region they are called in, and the Google
    service-account key file (a path; the key is read at load, never written in the config)
    whose OAuth2 tokens authenticate the calls. All three are required."""

    project: Text
    location: Text  # a region (us-central1, europe-west4, ...) or "global"
    credentials_file: Text
    probe_model: Text | None = None  # the publisher model probe() looks up; gemini-2.5-flash


class BedrockOptions(Frozen):
    """AWS Bedrock: the region its runtime is called in. Credentials are not options: they come
    from the AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
    AWS_PROFILE and the shared files, web identity, container or instance roles)."""

    region: Text  # us-east-1, eu-central-1, ...
    # Where probe() lists foundation models; default https://bedrock.{region}.amazonaws.com.
    control_url: Text | None = None


@dataclasses.dataclass(frozen=True)
class VendorWire:
    """A request body format callers may add fields to, as `vendor_options[name]`; `owned` are
    the body fields its adapters set themselves, which those may not replace."""

    name: str
    owned: frozenset[str]


OPENAI_WIRE = VendorWire(
    "openai",
    frozenset(
        {
            "model",
            "messages",
            "stream",
            "stream_options",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "max_tokens",
            "max_completion_tokens",
            "input",
        }
    ),
)
ANTHROPIC_WIRE = VendorWire(
    "anthropic",
    frozenset({"model", "messages", "stream", "system", "tools", "tool_choice", "max_tokens"}),
)
OLLAMA_WIRE = VendorWire(
    "ollama",
    frozenset({"model", "messages", "stream", "tools", "format", "options", "input"}),
)
GEMINI_WIRE = VendorWire(
    "gemini",
    frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}),
)

# Converse: vendor options go into additionalModelRequestFields (a few Converse fields of their own
# at the top level: providers/bedrock.py CONVERSE_OPTIONS).
BEDROCK_WIRE = VendorWire(
    "bedrock",
    frozenset(
        {"messages", "system", "inferenceConfig", "toolConfig", "additionalModelRequestFields"}
    ),
)

# The built-in default's provider entry (less name and type) when the environment has one.
Detect = Callable[[Mapping[str, str]], dict[str, Any] | None]


def _keyed(env: str, model: str) -> Detect:
    """Detected by an API key in `env`; "default" maps to `model`, any other name passes on."""

    def detect(environ: Mapping[str, str]) -> dict[str, Any] | None:
        if not environ.get(env):
            return None
        return {"api_key_env": env, "models": {"default": model, "*": "*"}}

    return detect


def _ollama(environ: Mapping[str, str]) -> dict[str, Any] | None:
    host = environ.get("OLLAMA_HOST")
    if not host:
        return None
    return {
        "base_url": host if "://" in host else f"http://{host}",
        "models": {"default": environ.get("OLLAMA_MODEL", "llama3.2"), "*": "*"},
    }


@dataclasses.dataclass(frozen=True)
class SecretFile:
    """A secret a provider type reads from a file its options name: read when the config is
    loaded (config/sources.py) into ProviderSettings.credentials, and masked like an API key."""

    option: str  # the option that names the file
    check: Callable[[str], str | None]  # what is wrong with the file's text ("is not ..."), or None
    masked: Callable[[str], list[str]]  # the pieces of the text that must never be seen


# What a Google service-account key file must hold for its tokens to be minted.
SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


def _service_account_problem(text: str) -> str | None:
    try:
        info = json.loads(text)
    except ValueError:
        return "is not JSON (a service-account key file is)"
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return "is not a service-account key file (type: service_account)"
    missing = [k for k in SERVICE_ACCOUNT_FIELDS if not isinstance(info.get(k), str) or not info[k]]
    return f"has no {', '.join(missing)}" if missing else None


def _service_account_secrets(text: str) -> list[str]:
    """Its private key as PEM, as the file escapes it, and each line of its base64 body, so
    even a piece of it is masked."""
    try:
        info = json.loads(text) if text else None
    except ValueError:
        return [text]
    key = info.get("private_key") if isinstance(info, dict) else None
    if not isinstance(key, str) or not key:
        return []
    lines = [line.strip() for line in key.splitlines() if len(line.strip()) >= 32]
    return [key, key.replace("\n", "\\n"), *lines]


GOOGLE_SERVICE_ACCOUNT = SecretFile(
    "credentials_file", _service_account_problem, _service_account_secrets
)


@dataclasses.dataclass(frozen=True)
class ProviderKind:
    """One provider type, as config, validation and the adapter registry know it."""

    name: str  # the `type` a provider is written with
    options: type[Frozen]  # the schema of its `options`
    capabilities: tuple[CapabilityName, ...] = CAPABILITIES  # unless a provider declares its own
    # Able to take images, it takes them by these URL schemes too (IMAGE_URL_CAPABILITIES): the
    # type's, not a setting (the gateway never fetches a URL or reads an object itself).
    image_url_schemes: tuple[str, ...] = ("https",)
    wire: VendorWire | None = None  # the vendor_options its requests read; None: none
    base_url_example: str = ""  # set: base_url is required, shown like this in the message
    detect: Detect | None = None  # the built-in default adds it when this finds it
    # Environment variables holding secrets the type's own library reads (not the config): they
    # are masked in logs like the config's secrets.
    ambient_secrets: tuple[str, ...] = ()
    secret_file: SecretFile | None = None  # a secret it reads from a file its options name


KINDS: tuple[ProviderKind, ...] = (
    ProviderKind("local", LocalOptions),
    ProviderKind(
        "openai", OpenAIOptions, wire=OPENAI_WIRE, detect=_keyed("OPENAI_API_KEY", "gpt-4o-mini")
    ),
    ProviderKind(
        "azure_openai",
        AzureOpenAIOptions,
        wire=OPENAI_WIRE,
        base_url_example="https://RESOURCE.openai.azure.com",
    ),
    ProviderKind(
        "anthropic",
        AnthropicOptions,
        # Structured output through a forced tool (README "Structured output"); no embeddings API.
        capabilities=("streaming", "tools", "images", "json_schema"),
        wire=ANTHROPIC_WIRE,
        detect=_keyed("ANTHROPIC_API_KEY", "claude-haiku-4-5"),
    ),
    ProviderKind("ollama", OllamaOptions, image_url_schemes=(), wire=OLLAMA_WIRE, detect=_ollama),
    # Image URLs go as fileData.fileUri (https URIs; the Gemini API reads no Cloud Storage).
    ProviderKind("gemini", GeminiOptions, wire=GEMINI_WIRE),
    # Gemini on Vertex AI: the same wire (and vendor_options["gemini"]), OAuth2 service accounts;
    # images by https URL or gs:// object, as fileData.fileUri.
    ProviderKind(
        "vertex",
        VertexOptions,
        image_url_schemes=("https", "gs"),
        wire=GEMINI_WIRE,
        secret_file=GOOGLE_SERVICE_ACCOUNT,
    ),
    # Bedrock takes image bytes or s3:// objects (s3Location), not https URLs; SigV4 from the
    # AWS chain.
    ProviderKind(
        "bedrock",
        BedrockOptions,
        image_url_schemes=("s3",),
        wire=BEDROCK_WIRE,
        # botocore's credential chain reads these itself
        ambient_secrets=("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"),
    ),
)
KIND: Mapping[str, ProviderKind] = {kind.name: kind for kind in KINDS}
TYPE_NAMES: tuple[str, ...] = tuple(KIND)


def file_secrets(type_name: str, credentials: str) -> list[str]:
    """What of a provider's credentials (its type's secret file) must never be seen."""
    secret_file = KIND[type_name].secret_file
    return secret_file.masked(credentials) if secret_file and credentials else []


# The wire formats vendor options are keyed by, and the provider types that read each.
WIRES: Mapping[str, VendorWire] = {k.wire.name: k.wire for k in KINDS if k.wire is not None}
VENDOR_WIRES: Mapping[str, tuple[str, ...]] = {
    wire: tuple(k.name for k in KINDS if k.wire is not None and k.wire.name == wire)
    for wire in WIRES
}
