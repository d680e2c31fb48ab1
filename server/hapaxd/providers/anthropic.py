"""Anthropic Messages API adapter (type "anthropic").

Constants, pure wire functions, classify, stream state, then the adapter. Talks HTTP through
providers/http_client.py; never imports grpc.

Anthropic has no embeddings API: the adapter is no core.provider.Embedder, so the router never
asks it to embed.

Structured output goes through a forced tool: the answer schema becomes a tool the model must
call (named after the schema), and that call's input comes back as the answer text, finish
reason STOP.

The Messages API (as its SDK's published types have it) takes no temperature, top_p, seed or
presence and frequency penalties: those are not sent. A caller whose model still takes
temperature can send it as a vendor option: `vendor_options {"anthropic": {"temperature": 0}}`.
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
    FinishReason,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)
from hapaxd.providers.answer_tool import answer_spec, answer_tool, folded
from hapaxd.providers.framing import Event, SSEDecoder
from hapaxd.providers.http_client import HttpClient, default_classify
from hapaxd.providers.parts import arguments_object, arguments_text, image_base64
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

STOP_REASONS: Mapping[str, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}

# The documented error types and the HTTP status each comes with.
ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}


def to_wire(
    request: CompletionRequest,
    *,
    stream: bool = False,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """The Messages request body: system prompts go top level, max_tokens is always sent."""
    system = [m.content for m in request.messages if m.role is Role.SYSTEM]
    turns = [m for m in request.messages if m.role is not Role.SYSTEM]
    plain = not (request.tools or request.response_format is not None) and all(
        not (m.parts or m.tool_calls or m.role is Role.TOOL) for m in turns
    )
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens if request.max_tokens is not None else default_max_tokens,
        "messages": (
            [{"role": m.role.value, "content": m.content} for m in turns]
            if plain
            else _messages(turns)
        ),
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    if not plain:
        _tooling(request, body)
    if request.vendor_options:
        body.update(request.options_for("anthropic"))  # validation kept our own fields out
    return body


def _messages(turns: list[Message]) -> list[dict[str, Any]]:
    """Turns as content blocks; consecutive tool results go together in one user turn."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the blocks of the tool-results turn just made
    for m in turns:
        if m.role is Role.TOOL:
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(block)
            continue
        results = None
        blocks: list[dict[str, Any]] = []
        if m.parts:
            blocks.extend(_part(p) for p in m.parts)
        elif m.content:
            blocks.append({"type": "text", "text": m.content})
        for call in m.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": arguments_object(call.arguments),
                }
            )
        out.append({"role": m.role.value, "content": blocks})
    return out


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if part.url:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    source = {"type": "base64", "media_type": part.mime_type, "data": image_base64(part)}
    return {"type": "image", "source": source}


def _tooling(request: CompletionRequest, body: dict[str, Any]) -> None:
    """tools and tool_choice, the answer tool for structured output included."""
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        entry: dict[str, Any] = {
            "name": tool.name,
            "input_schema": tool.parameters.value if tool.parameters is not None else NO_ARGUMENTS,
        }
        if tool.description:
            entry["description"] = tool.description
        if tool.strict:
            entry["strict"] = True
        tools.append(entry)
    choice: dict[str, Any] | None = None
    if request.tool_choice is not None:
        mode = request.tool_choice.mode
        if mode is ToolMode.FUNCTION:
            choice = {"type": "tool", "name": request.tool_choice.function}
        else:
            choice = {"type": {"auto": "auto", "none": "none", "required": "any"}[mode.value]}
    answer = answer_spec(request)
    if answer is not None:
        tools.append(
            {"name": answer.name, "description": answer.description, "input_schema": answer.schema}
        )
        # Only the answer tool, or (with tools of the caller's own) any tool: the model then
        # either calls one of those or answers through this one.
        choice = {"type": "tool", "name": answer.name} if not request.tools else {"type": "any"}
    if tools:
        body["tools"] = tools
    if request.parallel_tool_calls is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":  # no calls at all has nothing to run in parallel
            choice = {**choice, "disable_parallel_tool_use": True}
    if choice is not None and tools:
        body["tool_choice"] = choice


def stop_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return STOP_REASONS.get(value, FinishReason.UNSPECIFIED)


def _tokens(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int | float) else None


def usage_from_wire(usage: Any) -> Usage:
    """Anthropic counts cached prompt tokens apart from input_tokens: they are added in."""
    read = _tokens(usage, "cache_read_input_tokens") or 0
    written = _tokens(usage, "cache_creation_input_tokens") or 0
    return Usage(
        prompt_tokens=(_tokens(usage, "input_tokens") or 0) + read + written,
        completion_tokens=_tokens(usage, "output_tokens") or 0,
        cached_prompt_tokens=read,
    )


def from_wire(body: Any, answer: str | None = None) -> Completion:
    """A `message` object as a Completion (text blocks joined, tool_use blocks as tool calls,
    thinking as reasoning); `answer` names the structured-output tool, whose input is the
    answer. ValueError if it is not a message object."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise ValueError("response is not a message object")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    answered = None
    for block in body["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            if answer is not None and block.get("name") == answer:
                answered = arguments_text(block.get("input"))
                continue
            calls.append(
                ToolCall(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    arguments=arguments_text(block.get("input")),
                )
            )
    text, finish = folded(texts, answered, calls, stop_reason(body.get("stop_reason")))
    return Completion(
        text=text,
        finish_reason=finish,
        usage=usage_from_wire(body.get("usage")),
        upstream_model=str(body.get("model") or ""),
        tool_calls=tuple(calls),
        reasoning="".join(thinking),
    )


def error_type(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type") or "") if isinstance(error, dict) else ""


def classify(status: int, body: Any) -> FailureClass:
    """HTTP status refined by `{"type": "error", "error": {"type", "message"}}`."""
    kind = error_type(body)
    if kind in ("authentication_error", "permission_error", "billing_error"):
        return FailureClass.CREDENTIAL
    if kind == "rate_limit_error":
        return FailureClass.RATE_LIMITED
    if kind in ("overloaded_error", "api_error"):
        return FailureClass.TRANSIENT
    if kind == "invalid_request_error" and "credit balance" in error_message(body).lower():
        return FailureClass.CREDENTIAL  # an empty prepaid balance: another key may serve
    return default_classify(status, body)


def error_message(body: Any) -> str:
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:500]
    return str(error)[:500]


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    answer: str | None = None  # the structured-output tool's name, if the request has one
    model: str = ""
    usage: Any = None
    stop: FinishReason | None = None
    done: bool = False
    # content block index -> tool call index (or -1 for the answer tool's block)
    blocks: dict[int, int] = dataclasses.field(default_factory=dict)
    calls: int = 0
    answered: bool = False

    def on_item(self, event: Event) -> list[Chunk]:
        obj = stream_json(self.provider, event.data)
        if not isinstance(obj, dict):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "stream event not an object")
        kind = obj.get("type") or event.event
        if kind == "error":
            failure = classify(ERROR_STATUS.get(error_type(obj), 500), obj)
            raise error_in_body(self.provider, failure, error_message(obj), in_stream=True)
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._start(obj)
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self.model = str(message.get("model") or self.model)
                self._count(message.get("usage"))
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self.stop = stop_reason(delta["stop_reason"])
            self._count(obj.get("usage"))
        elif kind == "message_stop":
            self.done = True
            stop = self.stop or FinishReason.UNSPECIFIED
            if self.answered and not self.calls:
                stop = FinishReason.STOP  # the answer came through the answer tool
            final = Chunk(
                finish_reason=stop,
                usage=usage_from_wire(self.usage),
                upstream_model=self.model,
            )
            return [final]
        return []  # ping, content_block_stop, and event types added later

    def _start(self, obj: dict[str, Any]) -> list[Chunk]:
        block = obj.get("content_block")
        index = obj.get("index")
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            return []
        if not isinstance(index, int):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "tool_use without index")
        if self.answer is not None and block.get("name") == self.answer:
            self.blocks[index] = -1
            self.answered = True
            return []
        self.blocks[index] = self.calls
        self.calls += 1
        start = ToolCallDelta(
            index=self.blocks[index], id=str(block.get("id") or ""), name=str(block.get("name"))
        )
        return [Chunk(upstream_model=self.model, tool_calls=(start,))]

    def _delta(self, obj: dict[str, Any]) -> list[Chunk]:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                return [Chunk(delta=text, upstream_model=self.model)]
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            call = self.blocks.get(obj.get("index"))  # type: ignore[arg-type]
            if not isinstance(fragment, str) or not fragment or call is None:
                return []
            if call < 0:  # the answer tool: its input is the answer text
                return [Chunk(delta=fragment, upstream_model=self.model)]
            piece = ToolCallDelta(index=call, arguments=fragment)
            return [Chunk(upstream_model=self.model, tool_calls=(piece,))]
        elif kind == "thinking_delta":
            thinking = delta.get("thinking")
            if isinstance(thinking, str) and thinking:
                return [Chunk(upstream_model=self.model, reasoning=thinking)]
        return []  # signature_delta and kinds added later

    def at_end(self) -> Chunk | None:
        return None  # a body that ends before message_stop is cut off

    def _count(self, usage: Any) -> None:
        """Usage counts in message_start and message_delta are cumulative: keep the latest."""
        if not isinstance(usage, dict):
            return
        merged = dict(self.usage or {})
        merged.update({k: v for k, v in usage.items() if isinstance(v, int | float) and v})
        self.usage = merged


class AnthropicProvider:
    """The Messages API at `{base_url}/v1/messages`."""

    def __init__(self, spec: ProviderSpec) -> None:
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=DEFAULT_BASE_URL)
        self._spec = spec
        self._version = spec.options.get("anthropic_version") or DEFAULT_VERSION
        self._max_tokens = int(spec.options.get("default_max_tokens") or DEFAULT_MAX_TOKENS)
        self._http = HttpClient(spec, classify, error_message, self._auth_headers())
        self._messages = self._http.url("/v1/messages")

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "anthropic"

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._version}
        if self._spec.api_key:
            headers["x-api-key"] = self._spec.api_key
        return headers

    async def complete(self, request: CompletionRequest) -> Completion:
        body = to_wire(request, default_max_tokens=self._max_tokens)
        answer = await self._http.post_json(self._messages, body, request_id=request.request_id)
        if isinstance(answer, dict) and answer.get("type") == "error":
            failure = classify(ERROR_STATUS.get(error_type(answer), 500), answer)
            raise error_in_body(self.name, failure, error_message(answer))
        tool = answer_tool(request) if request.response_format is not None else None
        return decode_answer(self.name, answer, lambda body: from_wire(body, tool))

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        body = to_wire(request, stream=True, default_max_tokens=self._max_tokens)
        upstream = self._http.post_stream(self._messages, body, request_id=request.request_id)
        tool = answer_tool(request) if request.response_format is not None else None
        return relay(self.name, upstream, SSEDecoder(), _StreamState(self.name, tool))

    async def probe(self) -> None:
        await self._http.get_json(self._http.url("/v1/models"))

    async def aclose(self) -> None:
        await self._http.aclose()
