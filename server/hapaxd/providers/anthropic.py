"""Anthropic Messages API adapter (type "anthropic").

Constants, pure wire functions, classify, stream state, then the adapter. Talks HTTP through
providers/http_client.py; never imports grpc.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import ProviderSpec
from hapaxd.core.types import Chunk, Completion, CompletionRequest, FinishReason, Role, Usage
from hapaxd.providers.framing import Event, SSEDecoder
from hapaxd.providers.http_client import HttpClient, default_classify
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


def to_wire(
    request: CompletionRequest,
    *,
    stream: bool = False,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """The Messages request body: system prompts go top level, max_tokens is always sent."""
    system = [m.content for m in request.messages if m.role is Role.SYSTEM]
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens if request.max_tokens is not None else default_max_tokens,
        "messages": [
            {"role": m.role.value, "content": m.content}
            for m in request.messages
            if m.role is not Role.SYSTEM
        ],
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def stop_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return STOP_REASONS.get(value, FinishReason.UNSPECIFIED)


def _tokens(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int | float) else None


def from_wire(body: Any) -> Completion:
    """A `message` object as a Completion (text blocks joined); ValueError if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise ValueError("response is not a message object")
    text = "".join(
        block["text"]
        for block in body["content"]
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    usage = body.get("usage")
    return Completion(
        text=text,
        finish_reason=stop_reason(body.get("stop_reason")),
        usage=Usage(_tokens(usage, "input_tokens") or 0, _tokens(usage, "output_tokens") or 0),
        upstream_model=str(body.get("model") or ""),
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
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    stop: FinishReason | None = None
    done: bool = False

    def on_item(self, event: Event) -> list[Chunk]:
        obj = stream_json(self.provider, event.data)
        if not isinstance(obj, dict):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "stream event not an object")
        kind = obj.get("type") or event.event
        if kind == "error":
            failure = classify(ERROR_STATUS.get(error_type(obj), 500), obj)
            raise error_in_body(self.provider, failure, error_message(obj), in_stream=True)
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self.model = str(message.get("model") or self.model)
                self._count(message.get("usage"))
        elif kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    return [Chunk(delta=text, upstream_model=self.model)]
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self.stop = stop_reason(delta["stop_reason"])
            self._count(obj.get("usage"))
        elif kind == "message_stop":
            self.done = True
            final = Chunk(
                finish_reason=self.stop or FinishReason.UNSPECIFIED,
                usage=Usage(self.input_tokens, self.output_tokens),
                upstream_model=self.model,
            )
            return [final]
        return []  # ping, content_block_start/stop, and event types added later

    def at_end(self) -> Chunk | None:
        return None  # a body that ends before message_stop is cut off

    def _count(self, usage: Any) -> None:
        """Usage counts in message_start and message_delta are cumulative: keep the latest."""
        self.input_tokens = _tokens(usage, "input_tokens") or self.input_tokens
        self.output_tokens = _tokens(usage, "output_tokens") or self.output_tokens


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
        return decode_answer(self.name, answer, from_wire)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        body = to_wire(request, stream=True, default_max_tokens=self._max_tokens)
        upstream = self._http.post_stream(self._messages, body, request_id=request.request_id)
        return relay(self.name, upstream, SSEDecoder(), _StreamState(self.name))

    async def probe(self) -> None:
        await self._http.get_json(self._http.url("/v1/models"))

    async def aclose(self) -> None:
        await self._http.aclose()
