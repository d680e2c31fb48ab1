"""AWS Bedrock adapter (type "bedrock"): the Converse and ConverseStream APIs of the Bedrock
runtime, and InvokeModel for Titan and Cohere embeddings.

Constants, pure wire functions, classify, the event-stream decoder and stream state, the signer,
then the adapter. Talks HTTP through providers/http_client.py; never imports grpc.

Every request is signed with AWS Signature Version 4 by botocore (`SigV4Auth`), never by hand,
with credentials from botocore's own credential chain (environment, shared config and
credentials files, web identity, container and instance roles); refreshable credentials are
frozen once per request, so a refresh happens between requests, never inside one. botocore only
signs: the signed request goes out through the gateway's HttpClient (aiohttp), so pooling,
timeouts, cancellation and error mapping are the gateway's.

ConverseStream answers in AWS's binary event-stream framing; botocore's EventStreamBuffer decodes
it and checks both CRCs. Errors: the HTTP status, refined by the `x-amzn-ErrorType` header (or
`__type` in the body); inside a stream, an exception message whose `:exception-type` says which.

Bedrock takes images as bytes or s3:// objects (`s3Location`), not https URLs: its type takes
the s3 scheme only (config/provider_types.py). Structured output goes through a forced tool, as
with Anthropic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import yarl
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials  # type: ignore[import-untyped]
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

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
    Image,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)
from hapaxd.providers.answer_tool import answer_spec, answer_tool, folded
from hapaxd.providers.batches import embed_in_batches
from hapaxd.providers.http_client import HttpClient, default_classify
from hapaxd.providers.parts import (
    SamplingNames,
    arguments_object,
    arguments_text,
    image_base64,
    sampling,
)
from hapaxd.providers.relay import decode_answer, error_in_body, relay, stream_json

SERVICE = "bedrock"  # the signing name of both the runtime and the control plane
RUNTIME_URL = "https://bedrock-runtime.{region}.amazonaws.com"
CONTROL_URL = "https://bedrock.{region}.amazonaws.com"  # probe(): ListFoundationModels
PROBE_PATH = "/foundation-models?byOutputModality=EMBEDDING&byProvider=Amazon"
COHERE_BATCH = 96  # the most texts one Cohere embed call takes
# inferenceConfig's names for the sampling settings (Converse has no seed or penalties: those
# the caller sets are not sent).
SAMPLING: SamplingNames = {
    "max_tokens": "maxTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
}

STOP_REASONS: Mapping[str, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
    "content_filtered": FinishReason.CONTENT_FILTER,
}

# AWS error types (x-amzn-ErrorType, `__type`, a stream's `:exception-type` with its first
# letter upper-cased) and the class each means.
ERROR_CLASSES: Mapping[str, FailureClass] = {
    "ThrottlingException": FailureClass.RATE_LIMITED,
    "TooManyRequestsException": FailureClass.RATE_LIMITED,
    # The account's quota for the model: another provider's may serve.
    "ServiceQuotaExceededException": FailureClass.CREDENTIAL,
    "AccessDeniedException": FailureClass.CREDENTIAL,
    "UnrecognizedClientException": FailureClass.CREDENTIAL,
    "ExpiredTokenException": FailureClass.CREDENTIAL,
    "InvalidSignatureException": FailureClass.CREDENTIAL,
    "IncompleteSignatureException": FailureClass.CREDENTIAL,
    "MissingAuthenticationTokenException": FailureClass.CREDENTIAL,
    "ResourceNotFoundException": FailureClass.MODEL_UNAVAILABLE,
    "ValidationException": FailureClass.CALLER,
    "ModelTimeoutException": FailureClass.TIMEOUT,
    "InternalServerException": FailureClass.TRANSIENT,
    "ServiceUnavailableException": FailureClass.TRANSIENT,
    "ModelNotReadyException": FailureClass.TRANSIENT,
    "ModelErrorException": FailureClass.TRANSIENT,
    "ModelStreamErrorException": FailureClass.TRANSIENT,
}
# The HTTP status an exception met inside a 200 stream stands for.
ERROR_STATUS: Mapping[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceQuotaExceededException": 400,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
# Vendor options that are Converse fields of their own; any other goes into
# additionalModelRequestFields, which Converse passes on to the model.
CONVERSE_OPTIONS = frozenset(
    {
        "guardrailConfig",
        "performanceConfig",
        "promptVariables",
        "requestMetadata",
        "additionalModelResponseFieldPaths",
    }
)
IMAGE_FORMATS: Mapping[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def runtime_url(region: str) -> str:
    return RUNTIME_URL.format(region=region)


def control_url(region: str) -> str:
    return CONTROL_URL.format(region=region)


# requests --------------------------------------------------------------------------------------


NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}


class _ImageUrl(ValueError):
    pass


def to_wire(request: CompletionRequest) -> dict[str, Any]:
    """The Converse (and ConverseStream) body; the model is named in the path."""
    system = [m.content for m in request.messages if m.role is Role.SYSTEM]
    body: dict[str, Any] = {"messages": _messages(request.messages)}
    if system:
        body["system"] = [{"text": text} for text in system]
    config = sampling(request, SAMPLING)
    if config:
        body["inferenceConfig"] = config
    _tooling(request, body)
    options = request.options_for("bedrock") if request.vendor_options else {}
    extra: dict[str, Any] = {}
    for key, value in options.items():  # validation kept our own fields out
        if key in CONVERSE_OPTIONS:
            body[key] = value
        else:  # model-specific fields (top_k, thinking, ...): Converse passes them on
            extra[key] = value
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Turns as content blocks; tool results go as a user turn, and consecutive turns of one role
    are merged (Converse wants user and assistant to alternate)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            continue
        role = "assistant" if m.role is Role.ASSISTANT else "user"
        blocks: list[dict[str, Any]] = []
        if m.role is Role.TOOL:
            blocks.append(
                {
                    "toolResult": {
                        "toolUseId": m.tool_call_id,
                        "content": [_result(m.content)],
                        "status": "success",
                    }
                }
            )
        elif m.parts:
            blocks.extend(_part(p) for p in m.parts)
        elif m.content or not m.tool_calls:
            blocks.append({"text": m.content})
        for call in m.tool_calls:
            blocks.append(
                {
                    "toolUse": {
                        "toolUseId": call.id,
                        "name": call.name,
                        "input": arguments_object(call.arguments),
                    }
                }
            )
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _result(content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    return {"json": value} if isinstance(value, dict) else {"text": content}


def _part(part: str | Image) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    if part.url and not part.url.startswith("s3://"):
        raise _ImageUrl(
            "bedrock takes inline images and s3:// objects only; the gateway does not fetch"
            " image URLs"
        )
    fmt = IMAGE_FORMATS.get(part.mime_type.lower())
    if fmt is None:
        raise _ImageUrl(f"bedrock takes png, jpeg, gif or webp images, not {part.mime_type!r}")
    if part.url:  # the model reads the object with the caller's role: no bytes pass here
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": part.url}}}}
    return {"image": {"format": fmt, "source": {"bytes": image_base64(part)}}}


def _tooling(request: CompletionRequest, body: dict[str, Any]) -> None:
    """toolConfig: the caller's tools, and the answer tool for structured output. Converse has
    no "none" tool choice: a request that allows no calls sends no tools."""
    choice = request.tool_choice
    if choice is not None and choice.mode is ToolMode.NONE and request.response_format is None:
        return
    tools: list[dict[str, Any]] = []
    for tool in request.tools if not (choice and choice.mode is ToolMode.NONE) else ():
        spec: dict[str, Any] = {
            "name": tool.name,
            "inputSchema": {
                "json": tool.parameters.value if tool.parameters is not None else NO_ARGUMENTS
            },
        }
        if tool.description:
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
    wire_choice: dict[str, Any] | None = None
    if choice is not None and choice.mode is ToolMode.FUNCTION:
        wire_choice = {"tool": {"name": choice.function}}
    elif choice is not None and choice.mode is ToolMode.REQUIRED:
        wire_choice = {"any": {}}
    elif choice is not None and choice.mode is ToolMode.AUTO:
        wire_choice = {"auto": {}}
    answer = answer_spec(request)
    if answer is not None:
        spec = {
            "name": answer.name,
            "description": answer.description,
            "inputSchema": {"json": answer.schema},
        }
        # Only the answer tool, or (with tools of the caller's own) any tool.
        wire_choice = {"tool": {"name": answer.name}} if not tools else {"any": {}}
        tools.append({"toolSpec": spec})
    if not tools:
        return
    config: dict[str, Any] = {"tools": tools}
    if wire_choice is not None:
        config["toolChoice"] = wire_choice
    body["toolConfig"] = config


# answers ---------------------------------------------------------------------------------------


def stop_reason(value: Any) -> FinishReason:
    return (
        STOP_REASONS.get(value, FinishReason.UNSPECIFIED)
        if isinstance(value, str)
        else (FinishReason.UNSPECIFIED)
    )


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return int(value) if isinstance(value, int | float) else 0


def usage_from_wire(usage: Any) -> Usage:
    """inputTokens leaves out the prompt tokens read from or written to the cache: added in."""
    read = _count(usage, "cacheReadInputTokens")
    written = _count(usage, "cacheWriteInputTokens")
    return Usage(
        prompt_tokens=_count(usage, "inputTokens") + read + written,
        completion_tokens=_count(usage, "outputTokens"),
        cached_prompt_tokens=read,
    )


def _reasoning_text(block: Any) -> str:
    """A reasoningContent block's text ({reasoningText: {text}} whole, {text} streamed)."""
    if not isinstance(block, dict):
        return ""
    inner = block.get("reasoningText", block)
    text = inner.get("text") if isinstance(inner, dict) else None
    return text if isinstance(text, str) else ""


def from_wire(body: Any, model: str = "", answer: str | None = None) -> Completion:
    """A Converse response as a Completion; `answer` names the structured-output tool, whose
    input is the answer. ValueError if it is not one."""
    output = body.get("output") if isinstance(body, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise ValueError("response has no output.message.content")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    answered = None
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif "reasoningContent" in block:
            thinking.append(_reasoning_text(block["reasoningContent"]))
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            if answer is not None and use.get("name") == answer:
                answered = arguments_text(use.get("input"))
                continue
            calls.append(
                ToolCall(
                    id=str(use.get("toolUseId") or ""),
                    name=str(use.get("name") or ""),
                    arguments=arguments_text(use.get("input")),
                )
            )
    text, finish = folded(texts, answered, calls, stop_reason(body.get("stopReason")))
    return Completion(
        text=text,
        finish_reason=finish,
        usage=usage_from_wire(body.get("usage")),
        upstream_model=model,
        tool_calls=tuple(calls),
        reasoning="".join(thinking),
    )


# errors ----------------------------------------------------------------------------------------


def error_type(value: Any) -> str:
    """An AWS error type without its namespace (`ThrottlingException:http://...`, or
    `com.amazon.coral...#ThrottlingException`), first letter upper-cased as streams do not."""
    text = str(value or "").split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return text[:1].upper() + text[1:]


def error_body(headers: Mapping[str, str], body: Any) -> Any:
    """The error body with its type from x-amzn-ErrorType (HttpClient's error_body hook)."""
    kind = headers.get("x-amzn-ErrorType") or (
        body.get("__type") if isinstance(body, dict) else None
    )
    out = dict(body) if isinstance(body, dict) else {"message": str(body)[:500]}
    if kind:
        out["__type"] = error_type(kind)
    return out


def classify(status: int, body: Any) -> FailureClass:
    """HTTP status refined by the AWS error type."""
    kind = error_type(body.get("__type")) if isinstance(body, dict) else ""
    if kind in ERROR_CLASSES:
        return ERROR_CLASSES[kind]
    return default_classify(status, body)


def error_message(body: Any) -> str:
    """The message (AWS writes `message` or `Message`), with its error type."""
    if not isinstance(body, dict):
        return str(body)[:500]
    text = str(body.get("message") or body.get("Message") or body)[:500]
    kind = error_type(body.get("__type"))
    return f"{text} ({kind})" if kind and kind not in text else text


# streams ---------------------------------------------------------------------------------------


class EventStreamDecoder:
    """AWS event-stream messages from a body as its bytes arrive (botocore's EventStreamBuffer,
    which checks the prelude's and the message's CRC32); a broken frame is TRANSIENT."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._buffer = EventStreamBuffer()
        self._pending = 0  # bytes fed that no whole message has taken yet

    def feed(self, chunk: bytes) -> list[EventStreamMessage]:
        self._buffer.add_data(chunk)
        self._pending += len(chunk)
        try:
            messages = list(self._buffer)
        except ParserError as exc:
            raise UpstreamError(
                FailureClass.TRANSIENT,
                self._provider,
                f"malformed event stream: {type(exc).__name__}: {exc}",
            ) from None
        for message in messages:
            self._pending -= message.prelude.total_length
        return messages

    def close(self) -> list[EventStreamMessage]:
        return []  # a message cut off at the end is lost; the stream state tells it ended early


def _header(message: EventStreamMessage, name: str) -> str:
    value = message.headers.get(name)
    return value if isinstance(value, str) else ""


@dataclasses.dataclass(slots=True)
class _StreamState:
    provider: str
    model: str
    answer: str | None = None  # the structured-output tool's name, if the request has one
    stop: FinishReason | None = None
    done: bool = False
    blocks: dict[int, int] = dataclasses.field(default_factory=dict)  # block -> call (-1: answer)
    calls: int = 0
    answered: bool = False

    def on_item(self, message: EventStreamMessage) -> list[Chunk]:
        kind = _header(message, ":message-type")
        if kind in ("exception", "error"):
            self._raise(message)
        obj = stream_json(self.provider, message.payload.decode("utf-8", "replace"))
        if not isinstance(obj, dict):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "stream event not an object")
        event = _header(message, ":event-type")
        if event == "contentBlockDelta":
            return self._delta(obj)
        if event == "contentBlockStart":
            return self._start(obj)
        if event == "messageStop":
            self.stop = stop_reason(obj.get("stopReason"))
        elif event == "metadata":  # the last event: usage
            return [self._final(usage_from_wire(obj.get("usage")))]
        return []  # messageStart, contentBlockStop, and event types added later

    def _raise(self, message: EventStreamMessage) -> None:
        kind = error_type(
            _header(message, ":exception-type") or _header(message, ":error-code") or "Internal"
        )
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        body.setdefault("message", _header(message, ":error-message") or kind)
        body["__type"] = kind
        failure = classify(ERROR_STATUS.get(kind, 500), body)
        raise error_in_body(self.provider, failure, error_message(body), in_stream=True)

    def _start(self, obj: dict[str, Any]) -> list[Chunk]:
        start = obj.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        index = obj.get("contentBlockIndex")
        if not isinstance(use, dict):
            return []
        if not isinstance(index, int):
            raise UpstreamError(FailureClass.TRANSIENT, self.provider, "toolUse without index")
        if self.answer is not None and use.get("name") == self.answer:
            self.blocks[index] = -1
            self.answered = True
            return []
        self.blocks[index] = self.calls
        self.calls += 1
        first = ToolCallDelta(
            index=self.blocks[index],
            id=str(use.get("toolUseId") or ""),
            name=str(use.get("name") or ""),
        )
        return [Chunk(upstream_model=self.model, tool_calls=(first,))]

    def _delta(self, obj: dict[str, Any]) -> list[Chunk]:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return []
        text = delta.get("text")
        if isinstance(text, str):
            return [Chunk(delta=text, upstream_model=self.model)] if text else []
        use = delta.get("toolUse")
        if isinstance(use, dict):
            fragment = use.get("input")
            call = self.blocks.get(obj.get("contentBlockIndex"))  # type: ignore[arg-type]
            if not isinstance(fragment, str) or not fragment or call is None:
                return []
            if call < 0:  # the answer tool: its input is the answer text
                return [Chunk(delta=fragment, upstream_model=self.model)]
            return [
                Chunk(
                    upstream_model=self.model,
                    tool_calls=(ToolCallDelta(index=call, arguments=fragment),),
                )
            ]
        reasoning = _reasoning_text(delta.get("reasoningContent"))
        if reasoning:
            return [Chunk(upstream_model=self.model, reasoning=reasoning)]
        return []

    def _final(self, usage: Usage) -> Chunk:
        self.done = True
        stop = self.stop or FinishReason.UNSPECIFIED
        if self.answered and not self.calls:
            stop = FinishReason.STOP  # the answer came through the answer tool
        return Chunk(finish_reason=stop, usage=usage, upstream_model=self.model)

    def at_end(self) -> Chunk | None:
        """A body that ends after messageStop but without its metadata event is complete (with
        no usage); one that ends before messageStop is cut off."""
        return self._final(Usage()) if self.stop is not None else None


# embeddings ------------------------------------------------------------------------------------


def embedding_family(model: str) -> str:
    """ "titan" or "cohere", by the model id (a cross-region profile's `us.` prefix, or an ARN,
    allowed); ValueError for any other."""
    name = model.rsplit("/", 1)[-1].lower()
    if "amazon.titan-embed" in name:
        return "titan"
    if "cohere.embed" in name:
        return "cohere"
    raise ValueError(
        f"bedrock embeddings: {model!r} is neither an amazon.titan-embed nor a cohere.embed model"
    )


def titan_to_wire(text: str, dimensions: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputText": text}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return body


def titan_from_wire(body: Any) -> tuple[tuple[float, ...], int]:
    vector = body.get("embedding") if isinstance(body, dict) else None
    if not isinstance(vector, list):
        raise ValueError("response has no embedding")
    return tuple(float(x) for x in vector), _count(body, "inputTextTokenCount")


def cohere_to_wire(texts: list[str], dimensions: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"texts": texts, "input_type": "search_document"}
    if dimensions is not None:  # embed-v4 takes it; v3 refuses it (ValidationException)
        body["output_dimension"] = dimensions
    return body


def cohere_from_wire(body: Any, count: int) -> list[tuple[float, ...]]:
    rows = body.get("embeddings") if isinstance(body, dict) else None
    if isinstance(rows, dict):  # embedding_types asked for: {"float": [...]}
        rows = rows.get("float")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ValueError("response has no embeddings")
    if len(rows) != count:
        raise ValueError(f"{len(rows)} embeddings for {count} texts")
    return [tuple(float(x) for x in r) for r in rows]


# signing ---------------------------------------------------------------------------------------


class Signer:
    """SigV4 by botocore, with credentials from botocore's credential chain (resolved at the first
    call, in a thread: the chain may read files or ask a metadata endpoint)."""

    def __init__(self, provider: str, region: str, session: Any = None) -> None:
        self._provider = provider
        self.region = region
        self._session = session
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()

    async def credentials(self) -> ReadOnlyCredentials:
        """This request's credentials, refreshed first if they are about to expire."""
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._resolve)
        credentials = self._credentials
        assert credentials is not None
        try:
            if isinstance(credentials, RefreshableCredentials):
                frozen: ReadOnlyCredentials = await asyncio.to_thread(
                    credentials.get_frozen_credentials
                )
            else:
                frozen = credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            raise self._failed(f"AWS credential refresh failed: {type(exc).__name__}") from None
        return frozen

    def _resolve(self) -> Credentials:
        try:
            session = self._session or botocore.session.Session()
            found = session.get_credentials()
        except BotoCoreError as exc:
            raise self._failed(f"AWS credentials unusable: {type(exc).__name__}") from None
        if found is None:
            raise self._failed(
                "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, the shared credentials file, web identity or an instance role)"
            )
        credentials: Credentials = found
        return credentials

    def _failed(self, why: str) -> UpstreamError:
        return UpstreamError(FailureClass.CREDENTIAL, self._provider, why)

    def sign(
        self, credentials: ReadOnlyCredentials, method: str, url: str, body: bytes = b""
    ) -> dict[str, str]:
        """The headers that authenticate this request: Authorization, X-Amz-Date and, with a
        session token, X-Amz-Security-Token. `url` is as it goes on the wire."""
        headers = {"Content-Type": "application/json"} if body else {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(credentials, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())


def wire_url(url: str) -> str:
    """The URL as aiohttp will send it (yarl normalises percent-encoding: `%3A` goes as `:`), so
    what is signed is what is sent."""
    return str(yarl.URL(url))


# the adapter -----------------------------------------------------------------------------------


class BedrockProvider:
    """The Bedrock runtime at `https://bedrock-runtime.{region}.amazonaws.com` (base_url
    overrides); options region (required), control_url (probe's, default
    `https://bedrock.{region}.amazonaws.com`)."""

    def __init__(self, spec: ProviderSpec, session: Any = None) -> None:
        region = spec.options.get("region")
        if not region:
            raise ValueError(f"provider {spec.name!r}: bedrock requires options region")
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=runtime_url(region))
        self._spec = spec
        self._control = (spec.options.get("control_url") or control_url(region)).rstrip("/")
        self._signer = Signer(spec.name, region, session)
        self._http = HttpClient(spec, classify, error_message, error_body=error_body)

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "bedrock"

    @property
    def signer(self) -> Signer:
        return self._signer

    def _url(self, model: str, method: str) -> str:
        return wire_url(self._http.url(f"/model/{urllib.parse.quote(model, safe='')}/{method}"))

    async def _signed(self, method: str, url: str, body: bytes = b"") -> dict[str, str]:
        credentials = await self._signer.credentials()
        self._http.hide(credentials.secret_key, credentials.token or "")
        return self._signer.sign(credentials, method, url, body)

    async def _post(self, url: str, body: dict[str, Any], request_id: str) -> Any:
        data = json.dumps(body).encode()
        headers = await self._signed("POST", url, data)
        return await self._http.post_json(url, data, request_id=request_id, headers=headers)

    async def complete(self, request: CompletionRequest) -> Completion:
        body = self._body(request)
        answer = await self._post(self._url(request.model, "converse"), body, request.request_id)
        tool = answer_tool(request)
        return decode_answer(self.name, answer, lambda b: from_wire(b, request.model, tool))

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        try:
            return to_wire(request)
        except _ImageUrl as exc:
            raise UpstreamError(FailureClass.CALLER, self.name, str(exc)) from None

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        url = self._url(request.model, "converse-stream")
        data = json.dumps(self._body(request)).encode()
        headers = await self._signed("POST", url, data)  # its failure is the call's
        upstream = self._http.post_stream(url, data, request_id=request.request_id, headers=headers)
        state = _StreamState(self.name, request.model, answer_tool(request))
        chunks = relay(self.name, upstream, EventStreamDecoder(self.name), state)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        try:
            family = embedding_family(request.model)
        except ValueError as exc:
            raise UpstreamError(FailureClass.CALLER, self.name, str(exc)) from None
        if family == "titan":  # one text per call
            return await embed_in_batches(request, 1, self._titan)
        return await embed_in_batches(request, COHERE_BATCH, self._cohere)

    async def _titan(self, request: EmbeddingRequest) -> Embeddings:
        (text,) = request.inputs
        url = self._url(request.model, "invoke")
        answer = await self._post(url, titan_to_wire(text, request.dimensions), request.request_id)
        vector, tokens = decode_answer(self.name, answer, titan_from_wire)
        return Embeddings((vector,), Usage(prompt_tokens=tokens), upstream_model=request.model)

    async def _cohere(self, request: EmbeddingRequest) -> Embeddings:
        url = self._url(request.model, "invoke")
        body = cohere_to_wire(list(request.inputs), request.dimensions)
        answer = await self._post(url, body, request.request_id)
        vectors = decode_answer(
            self.name, answer, functools.partial(cohere_from_wire, count=len(request.inputs))
        )
        return Embeddings(tuple(vectors), Usage(), upstream_model=request.model)

    async def probe(self) -> None:
        """A signed ListFoundationModels on the control plane (a small filtered list): it
        spends no tokens, and proves the endpoint answers and the credentials are taken. It
        needs the bedrock:ListFoundationModels permission besides bedrock:InvokeModel*."""
        url = wire_url(self._control + PROBE_PATH)
        await self._http.get_json(url, headers=await self._signed("GET", url))

    async def aclose(self) -> None:
        await self._http.aclose()


def check_lines(names: list[str], secrets: bool) -> list[str]:
    """What `hapaxd check-config` says of bedrock providers `names`: where their AWS credentials
    come from. Not a setting (botocore's credential chain finds them), so it says whether the
    chain finds any; with `secrets` off, that they are not checked."""
    which = ", ".join(names)
    if not secrets:
        return [
            f"bedrock ({which}): AWS credentials come from the AWS credential chain; not checked"
        ]
    try:
        found = botocore.session.Session().get_credentials()
    except BotoCoreError as exc:
        return [f"warning: bedrock ({which}): AWS credentials unusable: {type(exc).__name__}"]
    if found is None:
        return [
            f"warning: bedrock ({which}): no AWS credentials found in the AWS credential chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared files, web "
            "identity, a container or instance role): its calls will fail as credential errors"
        ]
    return [f"bedrock ({which}): AWS credentials from the AWS credential chain ({found.method})"]
