"""OpenAI Chat Completions adapter (types "openai", "azure_openai"): any OpenAI-compatible server.

Constants, pure wire functions, classify, stream state, then the adapters. Talks HTTP through
providers/http_client.py; never imports grpc.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
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
from hapaxd.providers.framing import Event, SSEDecoder
from hapaxd.providers.http_client import HttpClient, default_classify
from hapaxd.providers.parts import SamplingNames, data_url, first_of, sampling
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

DEFAULT_BASE_URL = "https://api.openai.com/v1"
AZURE_API_VERSION = "2024-10-21"
DONE = "[DONE]"

FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}

# An error object met inside a 200 stream has no HTTP status: infer one from its type or code.
_ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
}


# Chat Completions' names for the sampling settings, by the field max_tokens goes in (the o-series
# models take max_completion_tokens: options.max_tokens_field, OpenAIOptions).
SAMPLING: Mapping[str, SamplingNames] = {
    field: {
        "max_tokens": field,
        "temperature": "temperature",
        "top_p": "top_p",
        "stop": "stop",
        "seed": "seed",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
    }
    for field in ("max_tokens", "max_completion_tokens")
}


def to_wire(
    request: CompletionRequest,
    *,
    stream: bool = False,
    max_tokens_field: str = "max_tokens",
    provider_type: str = "openai",
) -> dict[str, Any]:
    """The Chat Completions request body; unset fields are left out."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [
            {"role": m.role.value, "content": m.content} if _plain(m) else _message(m)
            for m in request.messages
        ],
    }
    body.update(sampling(request, SAMPLING[max_tokens_field]))
    if request.user:
        body["user"] = request.user
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.tools or request.tool_choice is not None or request.response_format is not None:
        _tooling(request, body)
    if request.vendor_options:
        body.update(request.options_for(provider_type))  # validation kept our own fields out
    return body


def _plain(message: Message) -> bool:
    return not (message.parts or message.tool_calls or message.role is Role.TOOL)


def _message(message: Message) -> dict[str, Any]:
    """A turn with parts, tool calls or a tool result."""
    if message.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in message.tool_calls
            ],
        }
    parts = [
        {"type": "text", "text": p}
        if isinstance(p, str)
        else {"type": "image_url", "image_url": {"url": data_url(p)}}
        for p in message.parts
    ]
    return {"role": message.role.value, "content": parts}


def _tooling(request: CompletionRequest, body: dict[str, Any]) -> None:
    """tools, tool_choice, parallel_tool_calls and response_format."""
    if request.tools:
        tools = []
        for tool in request.tools:
            function: dict[str, Any] = {"name": tool.name}
            if tool.description:
                function["description"] = tool.description
            if tool.parameters is not None:
                function["parameters"] = tool.parameters.value
            if tool.strict:
                function["strict"] = True
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.function}}
            if choice.mode is ToolMode.FUNCTION
            else choice.mode.value
        )
    answer = request.response_format
    if answer is not None:
        if answer.type is FormatType.JSON_SCHEMA and answer.schema is not None:
            schema: dict[str, Any] = {"name": answer.name, "schema": answer.schema.value}
            if answer.description:
                schema["description"] = answer.description
            if answer.strict:
                schema["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": answer.type.value}


def finish_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return FINISH_REASONS.get(value, FinishReason.UNSPECIFIED)


def usage_from_wire(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens_details")
    completion = value.get("completion_tokens_details")
    return Usage(
        prompt_tokens=int(value.get("prompt_tokens") or 0),
        completion_tokens=int(value.get("completion_tokens") or 0),
        cached_prompt_tokens=_count(prompt, "cached_tokens"),
        reasoning_tokens=_count(completion, "reasoning_tokens"),
    )


def _count(details: Any, key: str) -> int:
    value = details.get(key) if isinstance(details, dict) else None
    return int(value) if isinstance(value, int | float) else 0


def _reasoning(message: dict[str, Any]) -> str:
    """Reasoning text some compatible servers return apart from the answer (vLLM and DeepSeek
    `reasoning_content`, OpenRouter and Ollama `reasoning`)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return ()
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            out.append(
                ToolCall(
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                )
            )
    return tuple(out)


def _tool_deltas(delta: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        return ()
    out = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index = call.get("index")
        out.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
            )
        )
    return tuple(out)


def _content_text(content: Any) -> str:
    """`content` is a string, null, or (some compatible servers) a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def from_wire(body: Any) -> Completion:
    """A `chat.completion` object as a Completion; ValueError if it is not one."""
    if not isinstance(body, dict):
        raise ValueError("response is not a JSON object")
    choice = first_of(body, "choices")
    if choice is None:
        raise ValueError("response has no choices")
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    return Completion(
        text=_content_text(message.get("content")),
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=usage_from_wire(body.get("usage")) or Usage(),
        upstream_model=str(body.get("model") or ""),
        tool_calls=_tool_calls(message) if "tool_calls" in message else (),
        reasoning=_reasoning(message),
    )


def chunk_from_wire(obj: Any) -> Chunk | None:
    """One `chat.completion.chunk` as a Chunk, or None when it carries nothing (a role-only delta,
    Azure's prompt-filter preamble). ValueError if it is not a chunk object."""
    if not isinstance(obj, dict):
        raise ValueError("stream chunk is not a JSON object")
    choice = first_of(obj, "choices")
    delta = choice.get("delta") if choice is not None else None
    delta = delta if isinstance(delta, dict) else {}
    text = _content_text(delta.get("content"))
    finish = choice.get("finish_reason") if choice is not None else None
    usage = usage_from_wire(obj.get("usage"))
    calls = _tool_deltas(delta) if "tool_calls" in delta else ()
    reasoning = _reasoning(delta) if "reasoning_content" in delta or "reasoning" in delta else ""
    if not (text or calls or reasoning) and finish is None and usage is None:
        return None
    return Chunk(
        delta=text,
        finish_reason=finish_reason(finish) if finish is not None else None,
        usage=usage,
        upstream_model=str(obj.get("model") or ""),
        tool_calls=calls,
        reasoning=reasoning,
    )


def embed_to_wire(request: EmbeddingRequest) -> dict[str, Any]:
    """The /embeddings request body: floats, one vector per input."""
    body: dict[str, Any] = {
        "model": request.model,
        "input": list(request.inputs),
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    return body


def embeddings_from_wire(body: Any) -> Embeddings:
    """A `list` of `embedding` objects as Embeddings, in input order; ValueError if not one."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("response has no data")
    rows = sorted(
        (d for d in data if isinstance(d, dict) and isinstance(d.get("embedding"), list)),
        key=lambda d: d.get("index", 0),
    )
    if len(rows) != len(data):
        raise ValueError("an embedding is not a list of floats")
    usage = body.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(
        vectors=tuple(tuple(float(x) for x in row["embedding"]) for row in rows),
        usage=Usage(prompt_tokens=int(prompt) if isinstance(prompt, int | float) else 0),
        upstream_model=str(body.get("model") or ""),
    )


def _error_fields(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("type") or ""), str(error.get("code") or "")


def classify(status: int, body: Any) -> FailureClass:
    """HTTP status refined by the `{"error": {"type", "code"}}` body."""
    kind, code = _error_fields(body)
    if "insufficient_quota" in (kind, code):
        return FailureClass.CREDENTIAL  # billing: retrying will not help, another key may
    if code == "context_length_exceeded":
        return FailureClass.CALLER
    return default_classify(status, body)


def error_status(body: Any) -> int:
    """The HTTP status an error object met mid-stream would have had."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code < 600:
        return code  # vLLM and others put the status here
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
        return int(code)  # Azure
    kind, code_text = _error_fields(body)
    return _ERROR_STATUS.get(code_text) or _ERROR_STATUS.get(kind) or 500


def error_message(body: Any) -> str:
    """The vendor's message, with its error code when there is one."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(error, dict):
        return str(error)[:500]
    text = str(error.get("message") or error.get("type") or error)[:500]
    code = error.get("code")
    return f"{text} ({code})" if isinstance(code, str) and code and code not in text else text


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    finish: FinishReason | None = None
    usage: Usage | None = None
    model: str = ""
    done: bool = False

    def on_item(self, event: Event) -> list[Chunk]:
        if event.data.strip() == DONE:
            self.done = True
            return [self._final()]
        obj = stream_json(self.provider, event.data)
        if isinstance(obj, dict) and obj.get("error"):
            failure = classify(error_status(obj), obj)
            raise error_in_body(self.provider, failure, error_message(obj), in_stream=True)
        try:
            chunk = chunk_from_wire(obj)
        except ValueError as exc:
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, str(exc)) from None
        if chunk is None:
            return []
        self.model = chunk.upstream_model or self.model
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not (chunk.delta or chunk.tool_calls or chunk.reasoning):
            return []
        return [
            Chunk(
                delta=chunk.delta,
                upstream_model=self.model,
                tool_calls=chunk.tool_calls,
                reasoning=chunk.reasoning,
            )
        ]

    def at_end(self) -> Chunk | None:
        """Some compatible servers end the body after the finish chunk, with no [DONE]."""
        return self._final() if self.finish is not None else None

    def _final(self) -> Chunk:
        return Chunk(
            finish_reason=self.finish or FinishReason.UNSPECIFIED,
            usage=self.usage,
            upstream_model=self.model,
        )


class OpenAIProvider:
    """Chat Completions at `{base_url}/chat/completions`; base_url includes the `/v1`."""

    provider_type = "openai"

    def __init__(self, spec: ProviderSpec) -> None:
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=self._default_base_url())
        self._spec = spec
        self._max_tokens_field = spec.options.get("max_tokens_field") or "max_tokens"
        self._http = HttpClient(spec, classify, error_message, self._auth_headers())
        self._chat = self._http.url("/chat/completions")
        self._embeddings = self._http.url("/embeddings")

    def _default_base_url(self) -> str:
        return DEFAULT_BASE_URL

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return self.provider_type

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._spec.api_key}"} if self._spec.api_key else {}

    def _chat_url(self, request: CompletionRequest) -> str:
        return self._chat

    def _models_url(self) -> str:
        return self._http.url("/models")

    def _embeddings_url(self, request: EmbeddingRequest) -> str:
        return self._embeddings

    async def complete(self, request: CompletionRequest) -> Completion:
        body = to_wire(
            request, max_tokens_field=self._max_tokens_field, provider_type=self.provider_type
        )
        answer = await self._http.post_json(
            self._chat_url(request), body, request_id=request.request_id
        )
        if isinstance(answer, dict) and answer.get("error") and "choices" not in answer:
            failure = classify(error_status(answer), answer)
            raise error_in_body(self.name, failure, error_message(answer))
        return decode_answer(self.name, answer, from_wire)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        body = to_wire(
            request,
            stream=True,
            max_tokens_field=self._max_tokens_field,
            provider_type=self.provider_type,
        )
        upstream = self._http.post_stream(
            self._chat_url(request), body, request_id=request.request_id
        )
        return relay(self.name, upstream, SSEDecoder(), _StreamState(self.name))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        answer = await self._http.post_json(
            self._embeddings_url(request), embed_to_wire(request), request_id=request.request_id
        )
        if isinstance(answer, dict) and answer.get("error") and "data" not in answer:
            failure = classify(error_status(answer), answer)
            raise error_in_body(self.name, failure, error_message(answer))
        return decode_answer(self.name, answer, embeddings_from_wire)

    async def probe(self) -> None:
        await self._http.get_json(self._models_url())

    async def aclose(self) -> None:
        await self._http.aclose()


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: a deployment path, an `api-version` query and an `api-key` header."""

    provider_type = "azure_openai"

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self._api_version = spec.options.get("api_version") or AZURE_API_VERSION
        self._deployment = spec.options.get("deployment") or ""

    def _default_base_url(self) -> str:
        raise ValueError("azure_openai needs base_url, e.g. https://<resource>.openai.azure.com")

    def _auth_headers(self) -> dict[str, str]:
        return {"api-key": self._spec.api_key} if self._spec.api_key else {}

    def _chat_url(self, request: CompletionRequest) -> str:
        return self._deployment_url(request.model, "chat/completions")

    def _embeddings_url(self, request: EmbeddingRequest) -> str:
        return self._deployment_url(request.model, "embeddings")

    def _deployment_url(self, model: str, path: str) -> str:
        deployment = urllib.parse.quote(self._deployment or model, safe="")
        return self._http.url(
            f"/openai/deployments/{deployment}/{path}?api-version={self._api_version}"
        )

    def _models_url(self) -> str:
        return self._http.url(f"/openai/models?api-version={self._api_version}")
