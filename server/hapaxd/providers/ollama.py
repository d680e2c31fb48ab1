"""Native Ollama adapter (type "ollama"): `/api/chat` with NDJSON streaming.

Constants, pure wire functions, classify, stream state, then the adapter. Talks HTTP through
providers/http_client.py; never imports grpc.

Ollama takes images inline only (base64 in `images`): it lacks the `image_urls` capability
(image_urls=False in config/provider_types.py), so routing never sends it an image URL; one that
came anyway would fail over (the gateway does not fetch URLs for it). Its tool calls carry no ids:
the adapter names them `call_<n>`, and maps a tool result back to its function by that id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import ProviderSpec
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    FormatType,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)
from hapaxd.providers.framing import LineDecoder
from hapaxd.providers.http_client import HttpClient, default_classify
from hapaxd.providers.parts import (
    SamplingNames,
    arguments_object,
    arguments_text,
    image_base64,
    sampling,
)
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

DEFAULT_BASE_URL = "http://localhost:11434"
# The /api/chat `options` names for the sampling settings.
SAMPLING: SamplingNames = {
    "max_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

DONE_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}


def to_wire(request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
    """The /api/chat body. `stream` is always sent: Ollama streams unless told not to."""
    options = sampling(request, SAMPLING)
    plain = all(not (m.parts or m.tool_calls or m.role is Role.TOOL) for m in request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": (
            [{"role": m.role.value, "content": m.content} for m in request.messages]
            if plain
            else _messages(request.messages)
        ),
        "stream": stream,
    }
    if options:
        body["options"] = options
    if request.tools and not (request.tool_choice and request.tool_choice.mode is ToolMode.NONE):
        body["tools"] = [_tool(t) for t in _offered(request)]
    answer = request.response_format
    if answer is not None and answer.type is not FormatType.TEXT:
        schema = answer.schema
        body["format"] = (
            schema.value if answer.type is FormatType.JSON_SCHEMA and schema else "json"
        )
    if request.vendor_options:
        body.update(request.options_for("ollama"))  # validation kept our own fields out
    return body


def _offered(request: CompletionRequest) -> list[Any]:
    """Ollama has no tool_choice: naming one function offers only that one."""
    choice = request.tool_choice
    if choice is not None and choice.mode is ToolMode.FUNCTION:
        return [t for t in request.tools if t.name == choice.function]
    return list(request.tools)


def _tool(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.name,
        "parameters": (
            tool.parameters.value
            if tool.parameters is not None
            else {"type": "object", "properties": {}}
        ),
    }
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in messages:
        turn: dict[str, Any] = {"role": m.role.value, "content": m.content}
        images = m.images
        if images:
            if any(i.url for i in images):
                raise _NO_URLS
            turn["images"] = [image_base64(i) for i in images]
        if m.tool_calls:
            turn["tool_calls"] = [
                {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}}
                for c in m.tool_calls
            ]
        if m.role is Role.TOOL:
            turn["tool_name"] = names.get(m.tool_call_id, m.tool_call_id)
        out.append(turn)
    return out


class _ImageUrl(ValueError):
    pass


_NO_URLS = _ImageUrl("ollama takes inline images only; the gateway does not fetch image URLs")


def done_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return DONE_REASONS.get(value, FinishReason.UNSPECIFIED)


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return int(value) if isinstance(value, int | float) else 0


def usage_from_wire(obj: dict[str, Any]) -> Usage:
    return Usage(_count(obj, "prompt_eval_count"), _count(obj, "eval_count"))


def _message(obj: dict[str, Any]) -> dict[str, Any]:
    message = obj.get("message")
    return message if isinstance(message, dict) else {}


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    return value if isinstance(value, str) else ""


def _tool_calls(message: dict[str, Any], first: int = 0) -> list[ToolCall]:
    """Ollama's calls carry the arguments as an object and (mostly) no id: ids are made."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    out = []
    for n, call in enumerate(calls, start=first):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        given = call.get("id")
        out.append(
            ToolCall(
                id=given if isinstance(given, str) and given else f"call_{n}",
                name=str(function.get("name") or ""),
                arguments=arguments_text(function.get("arguments")),
            )
        )
    return out


def from_wire(body: Any) -> Completion:
    """A non-streamed /api/chat answer; ValueError if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise ValueError("response has no message")
    message = _message(body)
    calls = tuple(_tool_calls(message))
    finish = done_reason(body.get("done_reason"))
    return Completion(
        text=_text(message, "content"),
        finish_reason=FinishReason.TOOL_CALLS if calls else finish,
        usage=usage_from_wire(body),
        upstream_model=str(body.get("model") or ""),
        tool_calls=calls,
        reasoning=_text(message, "thinking"),
    )


def chunk_from_wire(obj: Any, calls_before: int = 0) -> Chunk | None:
    """One NDJSON record as a Chunk; the `done` record carries finish_reason and usage.
    None for a record with nothing in it; ValueError if it is not an object. Tool calls
    arrive whole, each as one delta; `calls_before` numbers them on from earlier records."""
    if not isinstance(obj, dict):
        raise ValueError("stream record is not a JSON object")
    model = str(obj.get("model") or "")
    message = _message(obj)
    text = _text(message, "content")
    reasoning = _text(message, "thinking")
    deltas = tuple(
        ToolCallDelta(index=n, id=c.id, name=c.name, arguments=c.arguments)
        for n, c in enumerate(_tool_calls(message, calls_before), start=calls_before)
    )
    if obj.get("done") is True:
        return Chunk(
            delta=text,
            finish_reason=done_reason(obj.get("done_reason")),
            usage=usage_from_wire(obj),
            upstream_model=model,
            tool_calls=deltas,
            reasoning=reasoning,
        )
    if not (text or reasoning or deltas):
        return None
    return Chunk(delta=text, upstream_model=model, tool_calls=deltas, reasoning=reasoning)


def embed_to_wire(request: EmbeddingRequest) -> dict[str, Any]:
    """The /api/embed body."""
    body: dict[str, Any] = {"model": request.model, "input": list(request.inputs)}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def embeddings_from_wire(body: Any) -> Embeddings:
    """An /api/embed answer; ValueError if it is not one."""
    vectors = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise ValueError("response has no embeddings")
    return Embeddings(
        vectors=tuple(tuple(float(x) for x in v) for v in vectors),
        usage=Usage(prompt_tokens=_count(body, "prompt_eval_count")),
        upstream_model=str(body.get("model") or ""),
    )


# Ollama's error bodies are `{"error": "<text>"}`: the HTTP status is all there is to go on.
classify = default_classify


def error_message(body: Any) -> str:
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error)[:500]


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    done: bool = False
    calls: int = 0  # tool calls seen so far

    def on_item(self, line: str) -> list[Chunk]:
        """What one record yields: a delta, or (done) any last delta then the final chunk."""
        obj = stream_json(self.provider, line)
        if isinstance(obj, dict) and obj.get("error"):
            raise error_in_body(
                self.provider, FailureClass.TRANSIENT, error_message(obj), in_stream=True
            )
        try:
            chunk = chunk_from_wire(obj, self.calls)
        except ValueError as exc:
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, str(exc)) from None
        if chunk is None:
            return []
        self.calls += len(chunk.tool_calls)
        if chunk.finish_reason is None:
            return [chunk]
        self.done = True
        finish = FinishReason.TOOL_CALLS if self.calls else chunk.finish_reason
        final = dataclasses.replace(
            chunk, delta="", reasoning="", tool_calls=(), finish_reason=finish
        )
        if not (chunk.delta or chunk.reasoning or chunk.tool_calls):
            return [final]
        content = Chunk(
            delta=chunk.delta,
            upstream_model=chunk.upstream_model,
            tool_calls=chunk.tool_calls,
            reasoning=chunk.reasoning,
        )
        return [content, final]

    def at_end(self) -> Chunk | None:
        return None  # a body that ends before the `done` record is cut off


class OllamaProvider:
    """Ollama's own API at `{base_url}/api/chat`."""

    def __init__(self, spec: ProviderSpec) -> None:
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=DEFAULT_BASE_URL)
        self._spec = spec
        self._http = HttpClient(spec, classify, error_message, self._auth_headers())
        self._chat = self._http.url("/api/chat")
        self._embed = self._http.url("/api/embed")

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "ollama"

    def _auth_headers(self) -> dict[str, str]:
        # Ollama has no keys of its own; one set here is for an authenticating proxy in front.
        return {"Authorization": f"Bearer {self._spec.api_key}"} if self._spec.api_key else {}

    def _body(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        try:
            return to_wire(request, stream=stream)
        except _ImageUrl as exc:  # another provider may take it: fail over, blame no one
            raise UpstreamError(FailureClass.MODEL_UNAVAILABLE, self.name, str(exc)) from None

    async def complete(self, request: CompletionRequest) -> Completion:
        body = self._body(request, stream=False)
        answer = await self._http.post_json(self._chat, body, request_id=request.request_id)
        if isinstance(answer, dict) and answer.get("error"):
            raise error_in_body(self.name, FailureClass.TRANSIENT, error_message(answer))
        return decode_answer(self.name, answer, from_wire)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        body = self._body(request, stream=True)
        upstream = self._http.post_stream(self._chat, body, request_id=request.request_id)
        return relay(self.name, upstream, LineDecoder(), _StreamState(self.name))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        body = embed_to_wire(request)
        answer = await self._http.post_json(self._embed, body, request_id=request.request_id)
        if isinstance(answer, dict) and answer.get("error"):
            raise error_in_body(self.name, FailureClass.TRANSIENT, error_message(answer))
        return decode_answer(self.name, answer, embeddings_from_wire)

    async def probe(self) -> None:
        await self._http.get_json(self._http.url("/api/tags"))

    async def aclose(self) -> None:
        await self._http.aclose()
