"""Native Ollama adapter (type "ollama"): `/api/chat` with NDJSON streaming.

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
from hapaxd.core.types import Chunk, Completion, CompletionRequest, FinishReason, Usage
from hapaxd.providers.framing import LineDecoder
from hapaxd.providers.http_client import HttpClient, default_classify
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

DEFAULT_BASE_URL = "http://localhost:11434"

DONE_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}


def to_wire(request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
    """The /api/chat body. `stream` is always sent: Ollama streams unless told not to."""
    options: dict[str, Any] = {}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.stop:
        options["stop"] = list(request.stop)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
        "stream": stream,
    }
    if options:
        body["options"] = options
    return body


def done_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return DONE_REASONS.get(value, FinishReason.UNSPECIFIED)


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return int(value) if isinstance(value, int | float) else 0


def usage_from_wire(obj: dict[str, Any]) -> Usage:
    return Usage(_count(obj, "prompt_eval_count"), _count(obj, "eval_count"))


def _content(obj: dict[str, Any]) -> str:
    message = obj.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def from_wire(body: Any) -> Completion:
    """A non-streamed /api/chat answer; ValueError if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise ValueError("response has no message")
    return Completion(
        text=_content(body),
        finish_reason=done_reason(body.get("done_reason")),
        usage=usage_from_wire(body),
        upstream_model=str(body.get("model") or ""),
    )


def chunk_from_wire(obj: Any) -> Chunk | None:
    """One NDJSON record as a Chunk; the `done` record carries finish_reason and usage.
    None for a record with nothing in it; ValueError if it is not an object."""
    if not isinstance(obj, dict):
        raise ValueError("stream record is not a JSON object")
    model = str(obj.get("model") or "")
    if obj.get("done") is True:
        return Chunk(
            delta=_content(obj),
            finish_reason=done_reason(obj.get("done_reason")),
            usage=usage_from_wire(obj),
            upstream_model=model,
        )
    text = _content(obj)
    return Chunk(delta=text, upstream_model=model) if text else None


# Ollama's error bodies are `{"error": "<text>"}`: the HTTP status is all there is to go on.
classify = default_classify


def error_message(body: Any) -> str:
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error)[:500]


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    done: bool = False

    def on_item(self, line: str) -> list[Chunk]:
        """What one record yields: a delta, or (done) any last delta then the final chunk."""
        obj = stream_json(self.provider, line)
        if isinstance(obj, dict) and obj.get("error"):
            raise error_in_body(
                self.provider, FailureClass.TRANSIENT, error_message(obj), in_stream=True
            )
        try:
            chunk = chunk_from_wire(obj)
        except ValueError as exc:
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, str(exc)) from None
        if chunk is None or chunk.finish_reason is None:
            return [] if chunk is None else [chunk]
        self.done = True
        final = dataclasses.replace(chunk, delta="")
        if not chunk.delta:
            return [final]
        return [Chunk(delta=chunk.delta, upstream_model=chunk.upstream_model), final]

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

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "ollama"

    def _auth_headers(self) -> dict[str, str]:
        # Ollama has no keys of its own; one set here is for an authenticating proxy in front.
        return {"Authorization": f"Bearer {self._spec.api_key}"} if self._spec.api_key else {}

    async def complete(self, request: CompletionRequest) -> Completion:
        body = to_wire(request)
        answer = await self._http.post_json(self._chat, body, request_id=request.request_id)
        if isinstance(answer, dict) and answer.get("error"):
            raise error_in_body(self.name, FailureClass.TRANSIENT, error_message(answer))
        return decode_answer(self.name, answer, from_wire)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        body = to_wire(request, stream=True)
        upstream = self._http.post_stream(self._chat, body, request_id=request.request_id)
        return relay(self.name, upstream, LineDecoder(), _StreamState(self.name))

    async def probe(self) -> None:
        await self._http.get_json(self._http.url("/api/tags"))

    async def aclose(self) -> None:
        await self._http.aclose()
