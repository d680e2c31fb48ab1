"""Request validation: raw request fields in, a CompletionRequest or InvalidRequest (naming every
bad field) out. Plain Python: the servicer maps protobuf to these arguments first (messages as
RawMessage, tools and formats already as domain values, whose limits are checked here)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from hapaxd.config.provider_types import WIRES
from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.types import (
    VENDOR_WIRES,
    CompletionRequest,
    EmbeddingRequest,
    FormatType,
    Image,
    Json,
    Message,
    Part,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
)

MAX_NAME = 256
MAX_STOPS = 16
MAX_METADATA = 64
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_URL = 8192
# An object in a cloud's storage: s3://BUCKET/KEY (S3 bucket names: 3-63 of a-z, 0-9, . and -)
# or gs://BUCKET/OBJECT (Cloud Storage: also _, and up to 222 with dots); a key of any
# characters but whitespace.
OBJECT_URI = re.compile(r"(?:s3|gs)://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/\S+")
OBJECT_SUFFIXES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
ROLES_ALLOWED = "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
# Body fields some adapter sets itself (each wire's `owned`, config/provider_types.py): vendor
# options may not replace them, under any wire.
RESERVED_OPTIONS: frozenset[str] = frozenset().union(*(w.owned for w in WIRES.values()))

Reject = Callable[[str, str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_content_chars: int = 1_000_000
    max_messages: int = 1024
    max_tools: int = 128
    max_schema_bytes: int = 64 * 1024  # each tool's parameters, and the response schema
    max_image_bytes: int = 8 * 1024 * 1024  # inline image bytes, all images of a request
    max_vendor_option_bytes: int = 16 * 1024  # all vendor options of a request, as JSON
    max_inputs: int = 2048  # texts in one embedding request


class RawMessage(NamedTuple):
    """One message as the caller sent it; `role` None for a role the gateway does not know."""

    role: Role | None
    content: str
    parts: Sequence[Part] = ()
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str = ""


def build_request(
    *,
    model: str,
    messages: Sequence[RawMessage],
    prompt: str,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: Sequence[str],
    user: str,
    metadata: Mapping[str, str],
    request_id: str = "",
    limits: Limits = Limits(),
    tools: Sequence[Tool] = (),
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool | None = None,
    response_format: ResponseFormat | None = None,
    seed: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    vendor_options: Mapping[str, Json] | None = None,
) -> CompletionRequest:
    bad: list[FieldViolation] = []

    def reject(field: str, why: str) -> None:
        bad.append(FieldViolation(field, why))

    if len(model) > MAX_NAME:
        reject("model", f"longer than {MAX_NAME} characters")
    if not messages and not prompt:
        reject("messages", "give messages, or a prompt")
    if len(messages) > limits.max_messages:
        reject("messages", f"{len(messages)} messages; the limit is {limits.max_messages}")
    total = len(prompt) if not messages else 0
    image_bytes = 0
    turns: list[Message] = []
    for i, raw in enumerate(messages):
        if raw.parts or raw.tool_calls or raw.tool_call_id or raw.role is Role.TOOL:
            message, chars, inline = _rich_message(reject, i, raw, limits)
            total += chars
            image_bytes += inline
            if message is not None:
                turns.append(message)
            continue
        role, content = raw.role, raw.content
        if role is None:
            reject(f"messages[{i}].role", ROLES_ALLOWED)
        if not content:
            reject(f"messages[{i}].content", "must not be empty")
        elif role is not None:
            turns.append(Message(role, content))
        total += len(content)
    if total > limits.max_content_chars:
        field = "messages" if messages else "prompt"
        reject(field, f"content is {total} characters; the limit is {limits.max_content_chars}")
    if image_bytes > limits.max_image_bytes:
        reject(
            "messages",
            f"inline images are {image_bytes} bytes; the limit is {limits.max_image_bytes}",
        )
    if max_tokens is not None and max_tokens < 1:
        reject("max_tokens", "must be at least 1")
    _check_range(reject, "temperature", temperature, 0.0, 2.0)
    _check_range(reject, "top_p", top_p, 0.0, 1.0)
    _check_range(reject, "presence_penalty", presence_penalty, -2.0, 2.0)
    _check_range(reject, "frequency_penalty", frequency_penalty, -2.0, 2.0)
    if len(stop) > MAX_STOPS:
        reject("stop", f"at most {MAX_STOPS} sequences")
    for i, sequence in enumerate(stop):
        if not sequence or len(sequence) > MAX_NAME:
            reject(f"stop[{i}]", f"must be 1 to {MAX_NAME} characters")
    _check_caller_fields(reject, user, metadata)
    if tools or tool_choice is not None:
        _check_tools(reject, tools, tool_choice, limits)
    if response_format is not None:
        _check_format(reject, response_format, limits)
    options: tuple[tuple[str, Json], ...] = ()
    if vendor_options:
        options = _check_options(reject, vendor_options, limits)
    if bad:
        raise InvalidRequest(bad)
    return CompletionRequest(
        model=model,
        messages=tuple(turns) or (Message(Role.USER, prompt),),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(stop),
        user=user,
        metadata=dict(metadata),
        request_id=request_id,
        tools=tuple(tools),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        response_format=response_format,
        seed=seed,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        vendor_options=options,
    )


def build_embedding_request(
    *,
    model: str,
    inputs: Sequence[str],
    dimensions: int | None,
    user: str,
    metadata: Mapping[str, str],
    request_id: str = "",
    limits: Limits = Limits(),
) -> EmbeddingRequest:
    bad: list[FieldViolation] = []

    def reject(field: str, why: str) -> None:
        bad.append(FieldViolation(field, why))

    if len(model) > MAX_NAME:
        reject("model", f"longer than {MAX_NAME} characters")
    if not inputs:
        reject("inputs", "give at least one text")
    if len(inputs) > limits.max_inputs:
        reject("inputs", f"{len(inputs)} texts; the limit is {limits.max_inputs}")
    empty = [i for i, text in enumerate(inputs) if not text]
    for i in empty[:MAX_STOPS]:
        reject(f"inputs[{i}]", "must not be empty")
    total = sum(len(text) for text in inputs)
    if total > limits.max_content_chars:
        reject("inputs", f"{total} characters; the limit is {limits.max_content_chars}")
    if dimensions is not None and not 1 <= dimensions <= 65536:
        reject("dimensions", "must be 1 to 65536")
    _check_caller_fields(reject, user, metadata)
    if bad:
        raise InvalidRequest(bad)
    return EmbeddingRequest(
        model=model,
        inputs=tuple(inputs),
        dimensions=dimensions,
        user=user,
        metadata=dict(metadata),
        request_id=request_id,
    )


def _check_caller_fields(reject: Reject, user: str, metadata: Mapping[str, str]) -> None:
    if len(user) > MAX_NAME:
        reject("user", f"longer than {MAX_NAME} characters")
    if len(metadata) > MAX_METADATA:
        reject("metadata", f"at most {MAX_METADATA} entries")
    for key, value in metadata.items():
        if not key or len(key) > MAX_NAME or len(value) > 4 * MAX_NAME:
            reject(f"metadata[{key[:MAX_NAME]!r}]", "keys 1 to 256 characters, values up to 1024")


def _rich_message(
    reject: Reject, i: int, raw: RawMessage, limits: Limits
) -> tuple[Message | None, int, int]:
    """A message with parts, tool calls or a tool result: (the message or None if bad, its
    characters, its inline image bytes)."""
    at = f"messages[{i}]"
    problems: list[str] = []

    def fail(field: str, why: str) -> None:
        problems.append(field)
        reject(field, why)

    role = raw.role
    if role is None:
        fail(f"{at}.role", ROLES_ALLOWED)
    if raw.parts and raw.content:
        fail(f"{at}.parts", "give content or parts, not both")
    if raw.parts and role is not Role.USER:
        fail(f"{at}.parts", "parts (text and images) are for ROLE_USER messages")
    texts: list[str] = []
    parts: list[Part] = []
    inline = 0
    for j, part in enumerate(raw.parts):
        if isinstance(part, str):
            if not part:
                fail(f"{at}.parts[{j}].text", "must not be empty")
            texts.append(part)
            parts.append(part)
            continue
        inline += len(part.data)
        why = _image_problem(part)
        if why:
            fail(f"{at}.parts[{j}].image", why)
        parts.append(_with_object_type(part))
    content = "".join(texts) if raw.parts else raw.content
    if raw.tool_calls and role is not Role.ASSISTANT:
        fail(f"{at}.tool_calls", "only ROLE_ASSISTANT messages carry tool calls")
    for j, call in enumerate(raw.tool_calls):
        if not call.id or len(call.id) > MAX_NAME:
            fail(f"{at}.tool_calls[{j}].id", f"must be 1 to {MAX_NAME} characters")
        if not FUNCTION_NAME.match(call.name):
            fail(f"{at}.tool_calls[{j}].name", "must be 1 to 64 of a-z, A-Z, 0-9, _ and -")
        if not _json_object_text(call.arguments):
            fail(f"{at}.tool_calls[{j}].arguments", "must be a JSON object, as text")
    if role is Role.TOOL:
        if not raw.tool_call_id or len(raw.tool_call_id) > MAX_NAME:
            fail(f"{at}.tool_call_id", "a ROLE_TOOL message names the call it answers")
        if not raw.content:
            fail(f"{at}.content", "a ROLE_TOOL message carries the tool's result")
    elif raw.tool_call_id:
        fail(f"{at}.tool_call_id", "only ROLE_TOOL messages answer a tool call")
    if not content and not raw.tool_calls and not raw.parts and role is not Role.TOOL:
        fail(f"{at}.content", "must not be empty")
    chars = len(content) + sum(len(c.arguments) for c in raw.tool_calls)
    if problems or role is None:
        return None, chars, inline
    message = Message(
        role,
        content,
        parts=tuple(parts),
        tool_calls=tuple(raw.tool_calls),
        tool_call_id=raw.tool_call_id,
    )
    return message, chars, inline


def _image_problem(image: Image) -> str:
    if image.url and image.data:
        return "give url or data, not both"
    if image.url:
        if len(image.url) > MAX_URL:
            return f"url must be at most {MAX_URL} characters"
        if image.url.startswith("https://"):
            return ""
        if not OBJECT_URI.fullmatch(image.url):
            return (
                "url must be an https URL, s3://BUCKET/KEY or gs://BUCKET/OBJECT"
                " (a provider of that cloud reads the object)"
            )
        if image.mime_type and image.mime_type not in IMAGE_TYPES:
            return f"mime_type must be one of {', '.join(IMAGE_TYPES)}"
        if not (image.mime_type or _object_type(image.url)):
            return (
                f"give the object's mime_type ({', '.join(IMAGE_TYPES)}): its name does not end"
                f" in {', '.join('.' + s for s in OBJECT_SUFFIXES)}"
            )
        return ""
    if not image.data:
        return "give an https url, or data with its mime_type"
    if image.mime_type not in IMAGE_TYPES:
        return f"mime_type must be one of {', '.join(IMAGE_TYPES)}"
    return ""


def _object_type(uri: str) -> str:
    """The MIME type an s3:// or gs:// object's name says, or ""."""
    return OBJECT_SUFFIXES.get(uri.rpartition(".")[2].lower(), "")


def _with_object_type(image: Image) -> Image:
    """An s3:// or gs:// image with its MIME type (the vendors need it), from its name if the
    caller gave none; any other image as it is."""
    if image.mime_type or not image.url or image.url.startswith("https://"):
        return image
    return dataclasses.replace(image, mime_type=_object_type(image.url))


def _json_object_text(text: str) -> bool:
    if not text:
        return True  # no arguments
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _check_tools(
    reject: Reject, tools: Sequence[Tool], choice: ToolChoice | None, limits: Limits
) -> None:
    if len(tools) > limits.max_tools:
        reject("tools", f"{len(tools)} tools; the limit is {limits.max_tools}")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not FUNCTION_NAME.match(tool.name):
            reject(f"tools[{i}].function.name", "must be 1 to 64 of a-z, A-Z, 0-9, _ and -")
        elif tool.name in names:
            reject(f"tools[{i}].function.name", f"{tool.name!r} is declared twice")
        names.add(tool.name)
        if len(tool.description) > limits.max_schema_bytes:
            reject(f"tools[{i}].function.description", "longer than max_schema_bytes")
        if tool.parameters is not None:
            _check_schema(reject, f"tools[{i}].function.parameters", tool.parameters, limits)
    if choice is None:
        return
    if choice.mode is ToolMode.FUNCTION and choice.function not in names:
        reject("tool_choice.function", f"{choice.function[:64]!r} is not one of the tools")
    if choice.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION) and not tools:
        reject("tool_choice", "requires tools")


def _check_schema(reject: Reject, field: str, schema: Json, limits: Limits) -> None:
    size = len(schema.text.encode())
    if size > limits.max_schema_bytes:
        reject(field, f"{size} bytes as JSON; the limit is {limits.max_schema_bytes}")
    if not isinstance(schema.value, dict):
        reject(field, "must be a JSON Schema object")


def _check_format(reject: Reject, response: ResponseFormat, limits: Limits) -> None:
    if response.type is not FormatType.JSON_SCHEMA:
        if response.schema is not None or response.name:
            reject("response_format.json_schema", "only with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        return
    if not FUNCTION_NAME.match(response.name):
        reject("response_format.json_schema.name", "must be 1 to 64 of a-z, A-Z, 0-9, _ and -")
    if response.schema is None:
        reject("response_format.json_schema.schema", "required with JSON_SCHEMA")
    else:
        _check_schema(reject, "response_format.json_schema.schema", response.schema, limits)


def _check_options(
    reject: Reject, options: Mapping[str, Json], limits: Limits
) -> tuple[tuple[str, Json], ...]:
    size = 0
    for wire, value in options.items():
        field = f"vendor_options[{wire[:64]!r}]"
        if wire not in VENDOR_WIRES:
            reject(field, f"the key is a wire format: {', '.join(VENDOR_WIRES)}")
            continue
        size += len(value.text.encode())
        taken = sorted(RESERVED_OPTIONS & set(value.value))
        if taken:
            reject(field, f"may not set {', '.join(taken)}: the gateway sets those")
    if size > limits.max_vendor_option_bytes:
        reject(
            "vendor_options",
            f"{size} bytes as JSON; the limit is {limits.max_vendor_option_bytes}",
        )
    return tuple(sorted(options.items(), key=lambda item: item[0]))


def _check_range(reject: Reject, field: str, value: float | None, low: float, high: float) -> None:
    if value is None:
        return
    if math.isnan(value) or not low <= value <= high:
        reject(field, f"must be a number from {low:g} to {high:g}")
