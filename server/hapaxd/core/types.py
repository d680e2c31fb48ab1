"""The gateway's own vocabulary: requests, messages (text, images, tool calls), tools, response
formats, completions, chunks and usage, and the capabilities a request needs of a provider.

Plain dataclasses shared by every layer. Imports nothing from grpc, protobuf or the HTTP client.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from typing import Any

from hapaxd.config import provider_types


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class Capability(enum.Enum):
    """What a provider's model can do; a request needs some of them (CompletionRequest.needs)."""

    STREAMING = "streaming"
    TOOLS = "tools"
    IMAGES = "images"
    IMAGE_URLS = "image_urls"  # images by https URL, which the provider fetches (not Ollama)
    IMAGE_S3_URIS = "image_s3_uris"  # images as s3:// objects the provider reads (Bedrock)
    IMAGE_GS_URIS = "image_gs_uris"  # images as gs:// objects the provider reads (Vertex AI)
    JSON_SCHEMA = "json_schema"  # structured output: a JSON object or JSON matching a schema
    EMBEDDINGS = "embeddings"


# The URL schemes an image may be given by, and the capability a provider needs for each.
IMAGE_URL_SCHEMES: Mapping[str, Capability] = {
    scheme: Capability(name) for scheme, name in provider_types.IMAGE_URL_CAPABILITIES.items()
}


def url_capability(url: str) -> Capability:
    """The capability an image URL needs (validated: one of IMAGE_URL_SCHEMES)."""
    return IMAGE_URL_SCHEMES[url.partition(":")[0]]


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"


class Json:
    """A JSON value (a schema, vendor options) kept with its canonical text, so that requests
    holding one stay hashable and two equal values compare equal whatever their key order."""

    __slots__ = ("text", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Json) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Json({self.text[:80]})"


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    """An image by https URL, by the URI of an object in a cloud's storage (s3://, gs://), or
    inline bytes; its MIME type (always, once validated, but for an https URL)."""

    url: str = ""
    data: bytes = b""
    mime_type: str = ""


Part = str | Image  # a piece of message content: text or an image


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: `arguments` is a JSON object as text."""

    id: str
    name: str
    arguments: str


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One turn. `content` is its text (the text parts joined, when it has parts); `parts` is set
    only when the turn was given as parts (text and images, in order)."""

    role: Role
    content: str
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str = ""  # the call a tool turn answers

    @property
    def images(self) -> tuple[Image, ...]:
        return tuple(p for p in self.parts if isinstance(p, Image))


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; `parameters` is its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: Json | None = None
    strict: bool = False


class ToolMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    FUNCTION = "function"  # the one function named in ToolChoice.function


@dataclasses.dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolMode
    function: str = ""


class FormatType(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output: JSON_SCHEMA carries `name` and `schema`."""

    type: FormatType
    name: str = ""
    description: str = ""
    schema: Json | None = None
    strict: bool = False


# The wire formats vendor options are keyed by, and the provider types that read each (declared
# with each type in config/provider_types.py).
VENDOR_WIRES: Mapping[str, tuple[str, ...]] = provider_types.VENDOR_WIRES


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated request. `model` is the logical name until the router resolves it."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    request_id: str = dataclasses.field(default="", hash=False, compare=False)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Extra body fields per wire format (VENDOR_WIRES), sorted by wire: hashable, order-free.
    vendor_options: tuple[tuple[str, Json], ...] = ()

    def with_model(self, model: str) -> CompletionRequest:
        """This request for another model name. Spelled out, field by field in order, because
        it runs twice a call and dataclasses.replace costs twice as much; a test checks that
        every field is kept."""
        return CompletionRequest(
            model,
            self.messages,
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.stop,
            self.user,
            self.metadata,
            self.request_id,
            self.tools,
            self.tool_choice,
            self.parallel_tool_calls,
            self.response_format,
            self.seed,
            self.presence_penalty,
            self.frequency_penalty,
            self.vendor_options,
        )

    def shape_key(self) -> tuple[object, ...]:
        """Everything that shapes the answer; request id and metadata do not."""
        return (
            self.model,
            self.messages,
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.stop,
            self.user,
            self.tools,
            self.tool_choice,
            self.parallel_tool_calls,
            self.response_format,
            self.seed,
            self.presence_penalty,
            self.frequency_penalty,
            self.vendor_options,
        )

    def is_deterministic(self) -> bool:
        """Whether two identical requests ask for the same answer rather than two samples.

        Greedy decoding (temperature explicitly 0) or a sampling seed qualifies: an unset
        temperature means the vendor's default sampling.
        """
        return self.temperature == 0.0 or self.seed is not None

    def needs(self) -> frozenset[Capability]:
        """The capabilities a provider's model must have to serve this request (streaming is
        the call's, not the request's: the router adds it)."""
        if not (self.tools or self.response_format is not None or self._rich_messages()):
            return _NOTHING  # the plain text call: nothing more to look at
        needs: set[Capability] = set()
        if self.tools or any(m.tool_calls or m.role is Role.TOOL for m in self.messages):
            needs.add(Capability.TOOLS)
        images = [i for m in self.messages for i in m.images]
        if images:
            needs.add(Capability.IMAGES)
            needs.update(url_capability(i.url) for i in images if i.url)
        if self.response_format is not None and self.response_format.type is not FormatType.TEXT:
            needs.add(Capability.JSON_SCHEMA)
        return frozenset(needs)

    def _rich_messages(self) -> bool:
        return any(m.parts or m.tool_calls or m.role is Role.TOOL for m in self.messages)

    def options_for(self, provider_type: str) -> Mapping[str, Any]:
        """The vendor options an upstream of `provider_type` gets (empty for most requests)."""
        for wire, value in self.vendor_options:
            if provider_type in VENDOR_WIRES.get(wire, ()):
                return value.value  # type: ignore[no-any-return]
        return {}


_NOTHING: frozenset[Capability] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # part of prompt_tokens, where the upstream reports it
    reasoning_tokens: int = 0  # part of completion_tokens, where the upstream reports it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer from one provider."""

    text: str
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    upstream_model: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call `index` has its id and name,
    later ones more of its arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer. The last one carries finish_reason and usage when known."""

    delta: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    upstream_model: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    reasoning: str = ""

    def size(self) -> int:
        """Characters this piece carries to the caller: text, reasoning and tool-call pieces
        (what a stream that ends without usage is charged by, admission/limits.py)."""
        size = len(self.delta) + len(self.reasoning)
        for call in self.tool_calls:
            size += len(call.name) + len(call.arguments)
        return size


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """What served an answer: the router's account of the call."""

    provider: str
    upstream_model: str
    attempts: int  # upstream attempts made, the successful one included
    shared: bool = False  # this caller joined an identical call in flight (core/dedup.py)
    upstream_seconds: float = 0.0  # time spent waiting on upstreams, every attempt included
    cached: bool = False  # answered from the response cache (cache/): no provider was asked


@dataclasses.dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated batch of texts to embed; `model` is the logical name until resolved."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    user: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    request_id: str = dataclasses.field(default="", hash=False, compare=False)

    def with_model(self, model: str) -> EmbeddingRequest:
        return dataclasses.replace(self, model=model)

    def shape_key(self) -> tuple[object, ...]:
        return ("embed", self.model, self.inputs, self.dimensions, self.user)

    def is_deterministic(self) -> bool:
        return True  # the same texts embed to the same vectors

    def needs(self) -> frozenset[Capability]:
        return _EMBEDDINGS


_EMBEDDINGS = frozenset({Capability.EMBEDDINGS})


@dataclasses.dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in input order."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage = Usage()
    upstream_model: str = ""


AnyRequest = CompletionRequest | EmbeddingRequest  # what the router, dedup and admission take
