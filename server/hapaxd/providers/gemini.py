"""Google Gemini API adapter (type "gemini"): `generateContent`, SSE `streamGenerateContent`,
`batchEmbedContents`, on the v1beta REST API.

Constants, pure wire functions, classify, stream state, then the adapter. Talks HTTP through
providers/http_client.py; never imports grpc.

The model is named in the path (`{base_url}/models/{model}:generateContent`), the key travels in
the `x-goog-api-key` header (never in the URL's `key=` query, so it never lands in an access log).

Gemini's function calls carry no ids (the API's optional `id` is used when an answer has one):
the adapter names each `call_<n>_<name>`, n counting the calls of one answer, and maps a tool
result back to its function by the calls earlier in the request (or, failing that, by that
name). The contract's tool calls carry no thought signature, which Gemini 3 models require on
the function calls of the turn being continued: those replayed get Google's documented stand-in
(THOUGHT_SIGNATURE_STANDIN), which skips its check.

Schemas go as JSON Schema (`parametersJsonSchema`, `responseJsonSchema`), as the caller gave
them, not converted to the OpenAPI subset of `parameters` and `responseSchema`. Gemini has no
parallel_tool_calls switch and no end-user field: those are not sent. A tool result goes as
`functionResponse.response`: its content itself when that is a JSON object, else
`{"output": content}` (the key the API reference names for a function's output).
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
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
    Image,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)
from hapaxd.providers.batches import embed_in_batches
from hapaxd.providers.framing import Event, SSEDecoder
from hapaxd.providers.http_client import NO_HEADERS, HttpClient, default_classify
from hapaxd.providers.parts import (
    SamplingNames,
    arguments_object,
    arguments_text,
    first_of,
    image_base64,
    sampling,
)
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
# generationConfig's names for the sampling settings.
SAMPLING: SamplingNames = {
    "max_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
# What Google's docs say to send where a function call's thought signature is not at hand.
THOUGHT_SIGNATURE_STANDIN = "skip_thought_signature_validator"

FINISH_REASONS: Mapping[str, FinishReason] = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "IMAGE_RECITATION": FinishReason.CONTENT_FILTER,
}
# Finish reasons that say the model's answer is broken, not cut short: no answer to pass on.
# Sampling again may well succeed, so they are TRANSIENT (retried, failed over).
BROKEN_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "MALFORMED_RESPONSE"})

# The google.rpc.Code names of `error.status`, and the class each means.
STATUS_CLASSES: Mapping[str, FailureClass] = {
    "RESOURCE_EXHAUSTED": FailureClass.RATE_LIMITED,
    "UNAUTHENTICATED": FailureClass.CREDENTIAL,
    "PERMISSION_DENIED": FailureClass.CREDENTIAL,
    # "Free tier not available in your country; enable billing": the account's, not the call's.
    "FAILED_PRECONDITION": FailureClass.CREDENTIAL,
    "NOT_FOUND": FailureClass.MODEL_UNAVAILABLE,
    "INVALID_ARGUMENT": FailureClass.CALLER,
    "INTERNAL": FailureClass.TRANSIENT,
    "UNAVAILABLE": FailureClass.TRANSIENT,
    "UNKNOWN": FailureClass.TRANSIENT,
    "CANCELLED": FailureClass.TRANSIENT,
    "DEADLINE_EXCEEDED": FailureClass.TIMEOUT,
}
# An error met inside a 200 stream whose `code` is missing: the HTTP status its `status` means.
STATUS_CODES: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"

# Vendor options that are generationConfig fields (the gateway sets generationConfig itself, so
# it is not an option): given at the top of `vendor_options["gemini"]`, they go into it.
GENERATION_OPTIONS = frozenset(
    {
        "thinkingConfig",
        "topK",
        "responseModalities",
        "mediaResolution",
        "responseLogprobs",
        "logprobs",
        "speechConfig",
    }
)


def to_wire(request: CompletionRequest) -> dict[str, Any]:
    """The generateContent body (streamed or not: the path says which)."""
    system = [m.content for m in request.messages if m.role is Role.SYSTEM]
    body: dict[str, Any] = {"contents": _contents(request.messages)}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config = sampling(request, SAMPLING)
    answer = request.response_format
    if answer is not None and answer.type is not FormatType.TEXT:
        config["responseMimeType"] = "application/json"
        if answer.type is FormatType.JSON_SCHEMA and answer.schema is not None:
            config["responseJsonSchema"] = answer.schema.value
    if request.tools:
        _tooling(request, body)
    options = request.options_for("gemini") if request.vendor_options else {}
    for key, value in options.items():  # validation kept our own fields out
        if key in GENERATION_OPTIONS:
            config[key] = value
        else:
            body[key] = value
    if config:
        body["generationConfig"] = config
    return body


def call_id(name: str, n: int) -> str:
    """The id of a function call that came without one: the n-th call of its answer."""
    return f"call_{n}_{name}"


def _called(call_id_: str, names: Mapping[str, str]) -> str:
    """The function a tool result answers: by the call earlier in the request, else by the
    name in an id of ours, else the id itself."""
    if call_id_ in names:
        return names[call_id_]
    prefix, _, rest = call_id_.partition("_")
    number, _, name = rest.partition("_")
    return name if prefix == "call" and number.isdigit() and name else call_id_


def _contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Turns as Content; consecutive tool results go together in one user turn."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the parts of the tool-results turn just made
    for m in messages:
        if m.role is Role.SYSTEM:
            continue
        if m.role is Role.TOOL:
            result = {
                "functionResponse": {
                    "name": _called(m.tool_call_id, names),
                    "response": _response(m.content),
                }
            }
            if results is None:
                results = []
                out.append({"role": "user", "parts": results})
            results.append(result)
            continue
        results = None
        parts: list[dict[str, Any]] = []
        if m.parts:
            parts.extend(_part(p) for p in m.parts)
        elif m.content or not m.tool_calls:
            parts.append({"text": m.content})
        for n, call in enumerate(m.tool_calls):
            part: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": arguments_object(call.arguments)}
            }
            if n == 0:  # parallel calls: the signature rides on the first
                part["thoughtSignature"] = THOUGHT_SIGNATURE_STANDIN
            parts.append(part)
        out.append({"role": "model" if m.role is Role.ASSISTANT else "user", "parts": parts})
    return out


def _response(content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": content}


def _part(part: str | Image) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    if part.url:
        data: dict[str, Any] = {"fileUri": part.url}
        mime = part.mime_type or mimetypes.guess_type(urllib.parse.urlsplit(part.url).path)[0]
        if mime:
            data["mimeType"] = mime
        return {"fileData": data}
    return {"inlineData": {"mimeType": part.mime_type, "data": image_base64(part)}}


def _tooling(request: CompletionRequest, body: dict[str, Any]) -> None:
    """tools and toolConfig."""
    declarations = []
    for tool in request.tools:
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        if tool.parameters is not None:
            declaration["parametersJsonSchema"] = tool.parameters.value
        declarations.append(declaration)
    body["tools"] = [{"functionDeclarations": declarations}]
    choice = request.tool_choice
    if choice is None:
        return
    config: dict[str, Any]
    if choice.mode is ToolMode.FUNCTION:
        config = {"mode": "ANY", "allowedFunctionNames": [choice.function]}
    else:
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice.mode.value]}
    body["toolConfig"] = {"functionCallingConfig": config}


def finish_reason(value: Any) -> FinishReason:
    if not isinstance(value, str):
        return FinishReason.UNSPECIFIED
    return FINISH_REASONS.get(value, FinishReason.UNSPECIFIED)


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return int(value) if isinstance(value, int | float) else 0


def usage_from_wire(usage: Any) -> Usage:
    """Thinking tokens are output Gemini counts apart from candidatesTokenCount: added in."""
    thoughts = _count(usage, "thoughtsTokenCount")
    return Usage(
        prompt_tokens=_count(usage, "promptTokenCount") + _count(usage, "toolUsePromptTokenCount"),
        completion_tokens=_count(usage, "candidatesTokenCount") + thoughts,
        cached_prompt_tokens=_count(usage, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


@dataclasses.dataclass(slots=True)
class _Content:
    """What one candidate's parts say."""

    text: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = dataclasses.field(default_factory=list)


def _read_parts(candidate: dict[str, Any] | None, first: int = 0) -> _Content:
    """Text, thought text and function calls; `first` numbers the calls on from earlier events."""
    out = _Content()
    content = candidate.get("content") if candidate is not None else None
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = str(call.get("name") or "")
            given = call.get("id")
            n = first + len(out.calls)
            out.calls.append(
                ToolCall(
                    id=given if isinstance(given, str) and given else call_id(name, n),
                    name=name,
                    arguments=arguments_text(call.get("args")),
                )
            )
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(part["text"])
    out.text, out.reasoning = "".join(texts), "".join(thoughts)
    return out


def _blocked(body: dict[str, Any]) -> bool:
    """The prompt itself was blocked: no candidates, a promptFeedback.blockReason."""
    feedback = body.get("promptFeedback")
    return (
        isinstance(feedback, dict)
        and bool(feedback.get("blockReason"))
        and not body.get("candidates")
    )


class _BrokenAnswer(Exception):
    """A finish reason saying the model's answer is unusable (BROKEN_FINISH): TRANSIENT."""


def _finish(candidate: dict[str, Any] | None, calls: int) -> FinishReason | None:
    """The candidate's finish reason, None while it has none; calls made turn STOP into
    TOOL_CALLS. _BrokenAnswer for BROKEN_FINISH."""
    value = candidate.get("finishReason") if candidate is not None else None
    if value is None:
        return None
    if value in BROKEN_FINISH:
        message = candidate.get("finishMessage") if candidate is not None else None
        raise _BrokenAnswer(f"finish reason {value}" + (f": {message}" if message else ""))
    reason = finish_reason(value)
    return FinishReason.TOOL_CALLS if calls and reason is FinishReason.STOP else reason


def model_version(body: dict[str, Any]) -> str:
    """`modelVersion`, without the `models/` some answers put before it."""
    value = str(body.get("modelVersion") or "")
    return value.removeprefix("models/")


def from_wire(body: Any) -> Completion:
    """A GenerateContentResponse as a Completion; ValueError if it is not one, _BrokenAnswer if
    the model's answer is broken."""
    if not isinstance(body, dict):
        raise ValueError("response is not a JSON object")
    usage = usage_from_wire(body.get("usageMetadata"))
    model = model_version(body)
    if _blocked(body):
        return Completion(
            text="", finish_reason=FinishReason.CONTENT_FILTER, usage=usage, upstream_model=model
        )
    candidate = first_of(body, "candidates")
    if candidate is None:
        raise ValueError("response has no candidates")
    content = _read_parts(candidate)
    return Completion(
        text=content.text,
        finish_reason=_finish(candidate, len(content.calls)) or FinishReason.UNSPECIFIED,
        usage=usage,
        upstream_model=model,
        tool_calls=tuple(content.calls),
        reasoning=content.reasoning,
    )


# The most texts one batchEmbedContents call takes ("at most 100 requests can be in one batch").
EMBED_BATCH = 100


def embed_to_wire(request: EmbeddingRequest) -> dict[str, Any]:
    """The batchEmbedContents body: one request per input, each naming the model."""
    name = f"models/{request.model}"
    rows = []
    for text in request.inputs:
        row: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            row["outputDimensionality"] = request.dimensions
        rows.append(row)
    return {"requests": rows}


def embeddings_from_wire(body: Any, model: str = "") -> Embeddings:
    """A batchEmbedContents answer, vectors in input order; ValueError if it is not one. Gemini
    API embeddings report no token counts (usage is zero unless an answer has usageMetadata)."""
    rows = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("values"), list) for r in rows
    ):
        raise ValueError("response has no embeddings")
    return Embeddings(
        vectors=tuple(tuple(float(x) for x in r["values"]) for r in rows),
        usage=Usage(prompt_tokens=_count(body.get("usageMetadata"), "promptTokenCount")),
        upstream_model=model,
    )


def _error(body: Any) -> dict[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: dict[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def classify(status: int, body: Any) -> FailureClass:
    """HTTP status refined by `{"error": {"code", "message", "status", "details"}}`."""
    error = _error(body)
    kind = str(error.get("status") or "")
    if kind == "INVALID_ARGUMENT" and any(
        d.get("@type") == ERROR_INFO and d.get("reason") == "API_KEY_INVALID"
        for d in _details(error)
    ):
        return FailureClass.CREDENTIAL  # Gemini answers a bad key with 400, not 401
    if kind in STATUS_CLASSES:
        return STATUS_CLASSES[kind]
    return default_classify(status, body)


def error_status(body: Any) -> int:
    """The HTTP status of an error object (met mid-stream, where there is no HTTP status)."""
    error = _error(body)
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    return STATUS_CODES.get(str(error.get("status") or ""), 500)


def retry_delay(body: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail (`"retryDelay": "12s"`, or "0.5s")."""
    for detail in _details(_error(body)):
        delay = detail.get("retryDelay")
        if detail.get("@type") == RETRY_INFO and isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def error_message(body: Any) -> str:
    """The vendor's message, with its status when there is one."""
    error = _error(body)
    if not error:
        return str(body)[:500]
    text = str(error.get("message") or error.get("status") or error)[:500]
    kind = error.get("status")
    return f"{text} ({kind})" if isinstance(kind, str) and kind and kind not in text else text


def _raise_in_body(provider: str, body: dict[str, Any], *, in_stream: bool) -> None:
    failure = classify(error_status(body), body)
    raise error_in_body(
        provider, failure, error_message(body), in_stream=in_stream, retry_after=retry_delay(body)
    )


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    model: str = ""
    usage: Usage | None = None
    calls: int = 0
    done: bool = False

    def on_item(self, event: Event) -> list[Chunk]:
        obj = stream_json(self.provider, event.data)
        if not isinstance(obj, dict):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "stream event not an object")
        if obj.get("error"):
            _raise_in_body(self.provider, obj, in_stream=True)
        self.model = model_version(obj) or self.model
        if isinstance(obj.get("usageMetadata"), dict):
            self.usage = usage_from_wire(obj["usageMetadata"])  # the latest counts are totals
        if _blocked(obj):
            return [self._final(FinishReason.CONTENT_FILTER)]
        candidate = first_of(obj, "candidates")
        content = _read_parts(candidate, self.calls)
        chunks = []
        if content.text or content.reasoning or content.calls:
            deltas = tuple(
                ToolCallDelta(index=self.calls + n, id=c.id, name=c.name, arguments=c.arguments)
                for n, c in enumerate(content.calls)
            )
            self.calls += len(deltas)
            chunks.append(
                Chunk(
                    delta=content.text,
                    upstream_model=self.model,
                    tool_calls=deltas,
                    reasoning=content.reasoning,
                )
            )
        try:
            finish = _finish(candidate, self.calls)
        except _BrokenAnswer as exc:
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, str(exc)) from None
        if finish is not None:  # the last event of the stream carries it, with the usage
            chunks.append(self._final(finish))
        return chunks

    def _final(self, finish: FinishReason) -> Chunk:
        self.done = True
        return Chunk(finish_reason=finish, usage=self.usage or Usage(), upstream_model=self.model)

    def at_end(self) -> Chunk | None:
        return None  # a body that ends before an event with a finish reason is cut off


class _Decoder(SSEDecoder):
    """SSE, plus an error object the API may write into a 200 stream as bare JSON lines rather
    than as a `data:` event (Google's own SDK reads those too): once its lines parse as JSON it
    comes out as an Event named "raw"."""

    def __init__(self) -> None:
        super().__init__()
        self._raw: list[str] = []
        self._whole: Event | None = None  # the last one completed

    def _line(self, line: str) -> Event | None:
        if not self._raw and not line.startswith("{"):
            return super()._line(line)
        self._raw.append(line)
        text = "\n".join(self._raw)
        try:
            json.loads(text)
        except ValueError:
            return None  # not whole yet
        self._raw = []
        self._whole = Event("raw", text)
        return self._whole

    def close(self) -> list[Event]:
        """An object whose last line ends the body unterminated comes out too (SSEDecoder drops
        what the body's last line completes: for an event that would need a blank line)."""
        self._whole = None
        events = super().close()
        if self._whole is not None and not any(e is self._whole for e in events):
            events.append(self._whole)
        if self._raw:  # cut off: stream_json reports it malformed
            events.append(Event("raw", "\n".join(self._raw)))
            self._raw = []
        return events


class GeminiProvider:
    """The Gemini API at `{base_url}/models/{model}:generateContent`; base_url includes the API
    version (`/v1beta`)."""

    def __init__(self, spec: ProviderSpec) -> None:
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=DEFAULT_BASE_URL)
        self._spec = spec
        headers = {"x-goog-api-key": spec.api_key} if spec.api_key else {}
        self._http = HttpClient(spec, classify, error_message, headers, retry_delay=retry_delay)

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "gemini"

    def _url(self, model: str, method: str) -> str:
        return self._http.url(f"/models/{urllib.parse.quote(model, safe='')}:{method}")

    async def _auth(self) -> Mapping[str, str]:
        """Per-call auth headers: none here (the key is a header of every request); Vertex AI's
        subclass sends its OAuth2 token."""
        return NO_HEADERS

    async def complete(self, request: CompletionRequest) -> Completion:
        url = self._url(request.model, "generateContent")
        answer = await self._http.post_json(
            url, to_wire(request), request_id=request.request_id, headers=await self._auth()
        )
        if isinstance(answer, dict) and answer.get("error") and "candidates" not in answer:
            _raise_in_body(self.name, answer, in_stream=False)
        try:
            return decode_answer(self.name, answer, from_wire)
        except _BrokenAnswer as exc:
            raise UpstreamError(FailureClass.TRANSIENT, self.name, str(exc)) from None

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        return self._relay(request, NO_HEADERS)

    def _relay(
        self, request: CompletionRequest, headers: Mapping[str, str]
    ) -> AsyncGenerator[Chunk, None]:
        url = self._url(request.model, "streamGenerateContent") + "?alt=sse"
        upstream = self._http.post_stream(
            url, to_wire(request), request_id=request.request_id, headers=headers
        )
        return relay(self.name, upstream, _Decoder(), _StreamState(self.name))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await embed_in_batches(request, EMBED_BATCH, self._embed)

    async def _embed(self, request: EmbeddingRequest) -> Embeddings:
        url = self._url(request.model, "batchEmbedContents")
        body = embed_to_wire(request)
        answer = await self._http.post_json(url, body, request_id=request.request_id)
        if isinstance(answer, dict) and answer.get("error") and "embeddings" not in answer:
            _raise_in_body(self.name, answer, in_stream=False)
        return decode_answer(
            self.name, answer, lambda body: embeddings_from_wire(body, request.model)
        )

    async def probe(self) -> None:
        await self._http.get_json(self._http.url("/models?pageSize=1"))

    async def aclose(self) -> None:
        await self._http.aclose()
