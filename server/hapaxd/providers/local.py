"""The built-in provider: no network, a deterministic answer made from the request, so the gateway
serves out of the box and in smoke tests. Its answers say plainly that they are local.

- Text: the prefix, then what the last user turn said (and how many images it showed).
- Tools: with tools offered (and tool choice not none), it calls one, the named one or else the
  first, with arguments made from the tool's schema (below), finish reason TOOL_CALLS. Once the
  conversation ends with a tool's result, it answers in text quoting that result.
- Structured output: a JSON object (`{"answer": ...}`), or a value made from the schema.

- Embeddings: `dimensions` (default 16) numbers made from a hash of each text, unit length: the
  same text always gets the same vector, and different texts different ones.

A value made from a schema: an enum's or const's first value, the default if there is one, a
string property gets the local text, numbers 0, booleans false, arrays one item, objects every
property (required or not, additionalProperties aside).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncGenerator
from typing import Any

from hapaxd.core.provider import ProviderSpec
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    FormatType,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)

PREFIX = "[hapax local provider: no upstream model was called]"
MAX_DEPTH = 8
DIMENSIONS = 16


def vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector made from the text's hash, the same every time."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    values = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(round(v / norm, 6) for v in values)


def _last_user(request: CompletionRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role is Role.USER), "")


def _said(request: CompletionRequest) -> str:
    last = next((m for m in reversed(request.messages) if m.role is Role.USER), None)
    if last is None:
        return f"{PREFIX} You said: "
    images = len(last.images)
    shown = f" (and showed {images} image{'s' if images != 1 else ''})" if images else ""
    return f"{PREFIX} You said{shown}: {last.content}"


def example(schema: Any, text: str, depth: int = 0) -> Any:
    """A value that fits `schema`, made deterministically (module docstring)."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return text
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: example(sub, text, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [example(schema.get("items"), text, depth + 1)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        return low if isinstance(low, int | float) else 0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def _tool_to_call(request: CompletionRequest) -> Any:
    """The tool the local provider calls, or None when it answers in text."""
    if not request.tools or request.messages[-1].role is Role.TOOL:
        return None
    choice = request.tool_choice
    if choice is not None and choice.mode is ToolMode.NONE:
        return None
    if choice is not None and choice.mode is ToolMode.FUNCTION:
        return next(t for t in request.tools if t.name == choice.function)
    return request.tools[0]


def answer(request: CompletionRequest) -> tuple[str, tuple[ToolCall, ...], FinishReason]:
    """The whole answer: (text, tool calls, finish reason), before max_tokens and stop."""
    tool = _tool_to_call(request)
    if tool is not None:
        schema = tool.parameters.value if tool.parameters is not None else {}
        arguments = example(schema, f"{PREFIX} {_last_user(request)}")
        text = json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False)
        return "", (ToolCall("call_local_0", tool.name, text),), FinishReason.TOOL_CALLS
    last = request.messages[-1]
    said = (
        f"{PREFIX} The tool returned: {last.content}" if last.role is Role.TOOL else _said(request)
    )
    form = request.response_format
    if form is not None and form.type is FormatType.JSON_OBJECT:
        return json.dumps({"answer": said}, ensure_ascii=False), (), FinishReason.STOP
    if form is not None and form.type is FormatType.JSON_SCHEMA and form.schema is not None:
        return (
            json.dumps(example(form.schema.value, said), ensure_ascii=False),
            (),
            FinishReason.STOP,
        )
    return said, (), FinishReason.STOP


def answer_words(request: CompletionRequest) -> tuple[list[str], FinishReason]:
    """The text answer as words (each with its leading space) and why it ends."""
    text, _, finish = answer(request)
    for stop in request.stop:
        cut = text.find(stop) if stop else -1
        if cut >= 0:
            text = text[:cut]
    words = text.split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        return pieces[: request.max_tokens], FinishReason.LENGTH
    return pieces, finish


def prompt_tokens(request: CompletionRequest) -> int:
    return sum(len(m.content.split()) for m in request.messages)


class LocalProvider:
    def __init__(self, spec: ProviderSpec) -> None:
        self._spec = spec
        # Seconds between streamed words, to mimic a slow model; config has checked and
        # normalised it (options.chunk_delay: 300ms arrives as "0.3").
        self._delay = float(spec.options.get("chunk_delay", "0"))

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "local"

    async def complete(self, request: CompletionRequest) -> Completion:
        _, calls, _ = answer(request)
        if calls:
            return Completion(
                text="",
                finish_reason=FinishReason.TOOL_CALLS,
                usage=Usage(prompt_tokens(request), len(calls[0].arguments.split())),
                upstream_model=request.model,
                tool_calls=calls,
            )
        words, finish = answer_words(request)
        return Completion(
            text="".join(words),
            finish_reason=finish,
            usage=Usage(prompt_tokens(request), len(words)),
            upstream_model=request.model,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        _, calls, _ = answer(request)
        if calls:
            call = calls[0]
            middle = len(call.arguments) // 2
            pieces = [
                ToolCallDelta(0, id=call.id, name=call.name),
                ToolCallDelta(0, arguments=call.arguments[:middle]),
                ToolCallDelta(0, arguments=call.arguments[middle:]),
            ]
            for piece in pieces:
                if self._delay:
                    await asyncio.sleep(self._delay)
                yield Chunk(upstream_model=request.model, tool_calls=(piece,))
            yield Chunk(
                finish_reason=FinishReason.TOOL_CALLS,
                usage=Usage(prompt_tokens(request), len(call.arguments.split())),
                upstream_model=request.model,
            )
            return
        words, finish = answer_words(request)
        for word in words:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Chunk(delta=word, upstream_model=request.model)
        yield Chunk(
            finish_reason=finish,
            usage=Usage(prompt_tokens(request), len(words)),
            upstream_model=request.model,
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        dimensions = request.dimensions or DIMENSIONS
        return Embeddings(
            vectors=tuple(vector(text, dimensions) for text in request.inputs),
            usage=Usage(prompt_tokens=sum(len(text.split()) for text in request.inputs)),
            upstream_model=request.model,
        )

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
