"""Vendor wire formats the fake upstream speaks: OpenAI (and Azure's variant), Anthropic, Ollama,
Gemini.

Every body starts from the vendor's real payload in tests/fakes/payloads/ (the same files the
wire tests feed to the adapters), with the reply's text, model, ids and counts filled in; each
vendor renders a Reply as a whole answer or as stream frames, a Fail as its error body, and its
model list.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from typing import Any

from tests.fakes.payloads import load

from . import aws
from .behaviours import Call, Fail, Reply

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):024d}"


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def fake_vector(text: str, index: int, dims: int) -> list[float]:
    """The fake's embedding of one input: its length, its index, then 0.25s."""
    return [float(len(text)), float(index), *([0.25] * max(0, dims - 2))][:dims]


# word_vector drops these, and reads each word on the left of SYNONYMS as the one on its right.
STOP_WORDS = frozenset(
    "a an the is are am was were be been being to of in for at by with and it its this that "
    "these those i me my we our you your he she they them do does did please could would can "
    "will kindly just hey hi hello".split()
)
SYNONYMS = {
    "automobile": "car",
    "vehicle": "car",
    "purchase": "buy",
    "film": "movie",
    "begin": "start",
    "big": "large",
    "quick": "fast",
    "assist": "help",
    "photo": "picture",
    "couch": "sofa",
    "kids": "children",
    "repair": "fix",
}


def words_of(text: str) -> list[str]:
    """The words word_vector is made of: lower case, apostrophes dropped (don't: dont), other
    punctuation a space, STOP_WORDS out, SYNONYMS mapped."""
    plain = re.sub(r"[^\w\s]|_", " ", text.lower().replace("'", "").replace("\u2019", ""))
    return [SYNONYMS.get(w, w) for w in plain.split() if w not in STOP_WORDS]


def word_vector(text: str, dims: int) -> list[float]:
    """A deterministic embedding by words: a feature-hashed bag of words_of(text) (each word
    adds +-1 at a position its SHA-256 picks), scaled to length 1 (all zeros without words).
    Texts with the same words in any order get the same vector; one word changed among n
    moves the cosine to about (n - 1) / n."""
    vector = [0.0] * dims
    for word in words_of(text):
        digest = hashlib.sha256(word.encode()).digest()
        position = int.from_bytes(digest[:8], "big") % dims
        vector[position] += 1.0 if digest[8] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def _vector(reply: Reply, text: str, index: int, dims: int) -> list[float]:
    if reply.vectors_by == "words":
        return word_vector(text, dims)
    if reply.vectors_by != "length":
        raise ValueError(f"unknown vectors_by {reply.vectors_by!r}")
    return fake_vector(text, index, dims)


def _halves(text: str) -> list[str]:
    """Arguments as streamed: two fragments (one if too short to cut)."""
    middle = len(text) // 2
    return [text[:middle], text[middle:]] if middle else [text]


class Frames:
    """One stream: opening frames, one frame per content piece, closing frames (text, or bytes
    for a binary framing: Bedrock's event stream)."""

    def __init__(self, opening: list[Any], content: list[Any], closing: list[Any]) -> None:
        self.opening, self.content, self.closing = opening, content, closing


class OpenAIWire:
    vendor = "openai"
    stream_content_type = "text/event-stream"
    finish = {
        "stop": "stop",
        "length": "length",
        "content_filter": "content_filter",
        "tool_calls": "tool_calls",
    }
    _errors = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided: sk-fake***key. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        ),
        403: (
            "invalid_request_error",
            "unsupported_country_region_territory",
            "Country, region, or territory not supported",
        ),
        404: (
            "invalid_request_error",
            "model_not_found",
            "The model `gpt-nonexistent` does not exist or you do not have access to it.",
        ),
        429: (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min "
            "(RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.",
        ),
        500: (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        503: ("server_error", None, "The server is overloaded or not ready yet."),
    }

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        body: dict[str, Any] = load("openai", "completion")
        body.update(self._identity(model))
        choice = body["choices"][0]
        message = choice["message"]
        message["content"] = reply.text or (None if reply.tool_calls else "")
        if reply.tool_calls:
            message["tool_calls"] = [self._call(c) for c in reply.tool_calls]
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning  # a compatible server's field
        choice["finish_reason"] = self.finish[reply.finish]
        body["usage"] = self._usage(reply)
        return body

    @staticmethod
    def _call(call: Call) -> dict[str, Any]:
        function = {"name": call.name, "arguments": call.arguments}
        return {"id": call.id, "type": "function", "function": function}

    @staticmethod
    def _identity(model: str) -> dict[str, Any]:
        return {
            "id": _id("chatcmpl-"),
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake0000",
        }

    def _usage(self, reply: Reply) -> dict[str, Any]:
        usage: dict[str, Any] = load("openai", "completion")["usage"]
        usage.update(
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.output_tokens,
            total_tokens=reply.prompt_tokens + reply.output_tokens,
        )
        usage["prompt_tokens_details"]["cached_tokens"] = reply.cached_tokens
        usage["completion_tokens_details"]["reasoning_tokens"] = reply.reasoning_tokens
        return usage

    def frames(self, reply: Reply, model: str) -> Frames:
        identity = self._identity(model)
        template = {**load("openai", "chunk"), **identity}
        choice = template["choices"][0]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return self.event(
                {**template, "choices": [{**choice, "delta": delta, "finish_reason": finish}]}
            )

        usage = {**load("openai", "usage_chunk"), **identity, "usage": self._usage(reply)}
        opening = [*self.preamble(), chunk({"role": "assistant", "content": "", "refusal": None})]
        content = [
            *(
                chunk({"reasoning_content": piece})
                for piece in _halves(reply.reasoning)[:2]
                if reply.reasoning
            ),
            *(chunk({"content": piece}) for piece in reply.pieces),
        ]
        calls = []
        for index, call in enumerate(reply.tool_calls):
            first = {**self._call(call), "index": index}
            first["function"] = {"name": call.name, "arguments": ""}
            calls.append(chunk({"tool_calls": [first]}))
            calls.extend(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _halves(call.arguments)
            )
        closing = [*calls, chunk({}, self.finish[reply.finish]), self.event(usage)]
        if reply.done_marker:
            closing.append("data: [DONE]\n\n")
        return Frames(opening, content, closing)

    def preamble(self) -> list[str]:
        return []

    def embeddings(self, reply: Reply, model: str, inputs: list[str], dims: int) -> dict[str, Any]:
        body: dict[str, Any] = load("openai", "embeddings")
        row = body["data"][0]
        body["data"] = [
            {**row, "index": i, "embedding": _vector(reply, text, i, dims)}
            for i, text in enumerate(inputs)
        ]
        body.update(
            model=model,
            usage={"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens},
        )
        return body

    def event(self, obj: Any) -> str:
        return f"data: {_dump(obj)}\n\n"

    def error_fields(self, fail: Fail) -> tuple[str, str | None, str]:
        default = self._errors.get(fail.status) or (
            ("server_error", None, "Internal error.")
            if fail.status >= 500
            else ("invalid_request_error", None, "Bad request.")
        )
        code = fail.code if fail.code is not None else (None if fail.kind else default[1])
        return fail.kind or default[0], code, fail.message or default[2]

    def error_body(self, fail: Fail) -> dict[str, Any]:
        kind, code, message = self.error_fields(fail)
        body: dict[str, Any] = load("openai", "error")
        body["error"].update(message=message, type=kind, code=code)
        return body

    def stream_error(self, fail: Fail) -> str:
        return self.event(self.error_body(fail))

    def malformed_body(self) -> bytes:
        return b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, '

    def malformed_frame(self) -> str:
        return 'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choi\n\n'

    def models(self) -> dict[str, Any]:
        return load("openai", "models")  # type: ignore[no-any-return]


class AzureWire(OpenAIWire):
    vendor = "azure"

    def preamble(self) -> list[str]:
        # Azure opens every stream with a chunk holding only the prompt's content-filter results.
        return [self.event(load("azure", "preamble"))]

    def error_body(self, fail: Fail) -> dict[str, Any]:
        if fail.kind or fail.code:  # request errors pass through in OpenAI's shape
            return super().error_body(fail)
        body: dict[str, Any] = load("azure", "error")  # its sample is a 429
        messages = {
            401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource.",
            429: body["error"]["message"],
        }
        message = fail.message or messages.get(fail.status) or self.error_fields(fail)[2]
        body["error"].update(code=str(fail.status), message=message)
        return body

    def models(self) -> dict[str, Any]:
        return load("azure", "models")  # type: ignore[no-any-return]


class AnthropicWire:
    vendor = "anthropic"
    stream_content_type = "text/event-stream; charset=utf-8"
    finish = {
        "stop": "end_turn",
        "length": "max_tokens",
        "content_filter": "refusal",
        "tool_calls": "tool_use",
    }
    _types = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    _messages = {
        "invalid_request_error": "messages: at least one message is required",
        "authentication_error": "invalid x-api-key",
        "billing_error": "Your credit balance is too low to access the Anthropic API.",
        "permission_error": "Your API key does not have permission to use the specified resource.",
        "not_found_error": "model: claude-nonexistent",
        "request_too_large": "Request exceeds the maximum allowed number of bytes.",
        "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
        "api_error": "Internal server error",
        "overloaded_error": "Overloaded",
    }

    def _message(
        self, reply: Reply, model: str, content: list[Any], stop: str | None, output_tokens: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = load("anthropic", "message")
        body.update(id=_id("msg_"), model=model, content=content, stop_reason=stop)
        body["usage"].update(
            input_tokens=reply.prompt_tokens - reply.cached_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=reply.cached_tokens,
        )
        return body

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            blocks.append(
                {"type": "thinking", "thinking": reply.reasoning, "signature": "EqQBfake"}
            )
        if reply.text or not reply.tool_calls:
            blocks.append({"type": "text", "text": reply.text})
        blocks.extend(self._tool_use(c, json.loads(c.arguments)) for c in reply.tool_calls)
        return self._message(reply, model, blocks, self.finish[reply.finish], reply.output_tokens)

    @staticmethod
    def _tool_use(call: Call, arguments: Any) -> dict[str, Any]:
        return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}

    def event(self, obj: dict[str, Any]) -> str:
        return f"event: {obj['type']}\ndata: {_dump(obj)}\n\n"

    def frames(self, reply: Reply, model: str) -> Frames:
        start: dict[str, Any] = load("anthropic", "message_start")  # content [], 1 output token
        start["message"].update(id=_id("msg_"), model=model)
        start["message"]["usage"]["input_tokens"] = reply.prompt_tokens - reply.cached_tokens
        start["message"]["usage"]["cache_read_input_tokens"] = reply.cached_tokens
        delta: dict[str, Any] = load("anthropic", "content_block_delta")
        finish: dict[str, Any] = load("anthropic", "message_delta")
        finish["delta"]["stop_reason"] = self.finish[reply.finish]
        finish["usage"]["output_tokens"] = reply.output_tokens
        index = 0
        opening = [self.event(start)]
        if reply.reasoning:
            opening += [
                self._start(index, {"type": "thinking", "thinking": "", "signature": ""}),
                *(
                    self._delta(index, {"type": "thinking_delta", "thinking": piece})
                    for piece in _halves(reply.reasoning)
                ),
                self._delta(index, {"type": "signature_delta", "signature": "EqQBfake"}),
                self._stop(index),
            ]
            index += 1
        text = reply.text or not reply.tool_calls
        if text:
            opening.append(
                self._start(index, load("anthropic", "content_block_start")["content_block"])
            )
        opening.append(self.event(load("anthropic", "ping")))
        content = [
            self.event({**delta, "index": index, "delta": {**delta["delta"], "text": piece}})
            for piece in reply.pieces
        ]
        closing = [self._stop(index)] if text else []
        index += 1 if text else 0
        for call in reply.tool_calls:
            closing += [
                self._start(index, self._tool_use(call, {})),
                *(
                    self._delta(index, {"type": "input_json_delta", "partial_json": piece})
                    for piece in _halves(call.arguments)
                ),
                self._stop(index),
            ]
            index += 1
        closing += [self.event(finish), self.event(load("anthropic", "message_stop"))]
        return Frames(opening, content, closing)

    def _start(self, index: int, block: dict[str, Any]) -> str:
        return self.event({"type": "content_block_start", "index": index, "content_block": block})

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        return self.event({"type": "content_block_delta", "index": index, "delta": delta})

    def _stop(self, index: int) -> str:
        return self.event({"type": "content_block_stop", "index": index})

    def error_body(self, fail: Fail) -> dict[str, Any]:
        kind = (
            fail.kind
            or self._types.get(fail.status)
            or ("api_error" if fail.status >= 500 else "invalid_request_error")
        )
        body: dict[str, Any] = load("anthropic", "error")
        body["error"].update(type=kind, message=fail.message or self._messages.get(kind, "Error"))
        body["request_id"] = _id("req_")
        return body

    def stream_error(self, fail: Fail) -> str:
        body: dict[str, Any] = load("anthropic", "stream_error")
        body["error"] = self.error_body(fail)["error"]
        return self.event(body)

    def malformed_body(self) -> bytes:
        return b'{"id": "msg_broken", "type": "message", "content": [{"type": "text", "te'

    def malformed_frame(self) -> str:
        return 'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def models(self) -> dict[str, Any]:
        return load("anthropic", "models")  # type: ignore[no-any-return]


class OllamaWire:
    vendor = "ollama"
    stream_content_type = "application/x-ndjson"
    finish = {"stop": "stop", "length": "length", "content_filter": "stop", "tool_calls": "stop"}
    _messages = {
        400: "invalid request",
        401: "unauthorized",
        404: 'model "llama3.2" not found, try pulling it first',
        500: "llama runner process has terminated: exit status 2",
        429: "too many requests",
        503: "server busy, please try again.  maximum pending requests exceeded",
    }

    @staticmethod
    def _now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

    def _record(self, model: str, content: str) -> dict[str, Any]:
        record: dict[str, Any] = load("ollama", "chunk")
        record.update(model=model, created_at=self._now())
        record["message"]["content"] = content
        return record

    def _done(self, reply: Reply, model: str, content: str) -> dict[str, Any]:
        record: dict[str, Any] = load("ollama", "chat")
        record.update(
            model=model,
            created_at=self._now(),
            done_reason=self.finish[reply.finish],
            prompt_eval_count=reply.prompt_tokens,
            eval_count=reply.output_tokens,
        )
        record["message"]["content"] = content
        return record

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        done = self._done(reply, model, reply.text)
        if reply.reasoning:
            done["message"]["thinking"] = reply.reasoning
        if reply.tool_calls:
            done["message"]["tool_calls"] = [self._call(c) for c in reply.tool_calls]
        return done

    @staticmethod
    def _call(call: Call) -> dict[str, Any]:
        # Ollama's calls have no id; arguments are an object.
        return {"function": {"name": call.name, "arguments": json.loads(call.arguments)}}

    def frames(self, reply: Reply, model: str) -> Frames:
        opening = []
        for piece in _halves(reply.reasoning) if reply.reasoning else []:
            record = self._record(model, "")
            record["message"]["thinking"] = piece
            opening.append(_dump(record) + "\n")
        content = [_dump(self._record(model, piece)) + "\n" for piece in reply.pieces]
        closing = []
        if reply.tool_calls:  # whole, in one record before the done record
            record = self._record(model, "")
            record["message"]["tool_calls"] = [self._call(c) for c in reply.tool_calls]
            closing.append(_dump(record) + "\n")
        closing.append(_dump(self._done(reply, model, "")) + "\n")
        return Frames(opening, content, closing)

    def embeddings(self, reply: Reply, model: str, inputs: list[str], dims: int) -> dict[str, Any]:
        body: dict[str, Any] = load("ollama", "embed")
        body.update(
            model=model,
            embeddings=[_vector(reply, text, i, dims) for i, text in enumerate(inputs)],
            prompt_eval_count=reply.prompt_tokens,
        )
        return body

    def error_body(self, fail: Fail) -> dict[str, Any]:
        body: dict[str, Any] = load("ollama", "error")
        body["error"] = fail.message or self._messages.get(fail.status, "internal error")
        return body

    def stream_error(self, fail: Fail) -> str:
        return _dump(self.error_body(fail)) + "\n"

    def malformed_body(self) -> bytes:
        return b'{"model": "llama3.2", "message": {"role": "assistant", "cont'

    def malformed_frame(self) -> str:
        return '{"model": "llama3.2", "created_at": "2024-10-01T00:00:00Z", "mess\n'

    def models(self) -> dict[str, Any]:
        return load("ollama", "tags")  # type: ignore[no-any-return]


class GeminiWire:
    """The Gemini API: every SSE event is a whole GenerateContentResponse, the last one carrying
    the finish reason and the usage; function calls come whole, in one event, and carry no id."""

    vendor = "gemini"
    stream_content_type = "text/event-stream"
    retry_in_body = True  # a wait is a google.rpc.RetryInfo detail, not a Retry-After header
    finish = {
        "stop": "STOP",
        "length": "MAX_TOKENS",
        "content_filter": "SAFETY",
        "tool_calls": "STOP",  # Gemini finishes a turn of function calls with STOP
    }
    _errors = {
        400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401: (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
        ),
        403: (
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        ),
        404: (
            "NOT_FOUND",
            "models/gemini-nonexistent is not found for API version v1beta, or is not supported "
            "for generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        ),
        429: ("RESOURCE_EXHAUSTED", load("gemini", "quota_error")["error"]["message"]),
        499: ("CANCELLED", "The operation was cancelled."),
        500: (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        ),
        503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    }

    def _response(
        self, reply: Reply, model: str, parts: list[dict[str, Any]], finish: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = load("gemini", "generate")
        candidate = body["candidates"][0]
        candidate["content"]["parts"] = parts
        if finish is None:
            del candidate["finishReason"]
        else:
            candidate["finishReason"] = finish
        usage = body["usageMetadata"]
        answer = reply.output_tokens - reply.reasoning_tokens
        usage.update(
            promptTokenCount=reply.prompt_tokens,
            candidatesTokenCount=answer,
            totalTokenCount=reply.prompt_tokens + reply.output_tokens,
            promptTokensDetails=[{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
            thoughtsTokenCount=reply.reasoning_tokens,
        )
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
        body.update(modelVersion=model, responseId=_id(""))
        return body

    @staticmethod
    def _call(call: Call) -> dict[str, Any]:
        return {"functionCall": {"name": call.name, "args": json.loads(call.arguments)}}

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if reply.reasoning:
            parts.append({"text": reply.reasoning, "thought": True})
        if reply.text or not reply.tool_calls:
            parts.append({"text": reply.text})
        parts.extend(self._call(c) for c in reply.tool_calls)
        return self._response(reply, model, parts, self.finish[reply.finish])

    def _chunk(self, model: str, parts: list[dict[str, Any]], prompt: int) -> dict[str, Any]:
        event: dict[str, Any] = load("gemini", "chunk")
        event["candidates"][0]["content"]["parts"] = parts
        event["usageMetadata"].update(
            promptTokenCount=prompt,
            totalTokenCount=prompt,
            promptTokensDetails=[{"modality": "TEXT", "tokenCount": prompt}],
        )
        event.update(modelVersion=model)
        return event

    def event(self, obj: Any) -> str:
        return f"data: {_dump(obj)}\n\n"

    def frames(self, reply: Reply, model: str) -> Frames:
        prompt = reply.prompt_tokens
        opening = [
            self.event(self._chunk(model, [{"text": piece, "thought": True}], prompt))
            for piece in (_halves(reply.reasoning) if reply.reasoning else [])
        ]
        content = [self.event(self._chunk(model, [{"text": p}], prompt)) for p in reply.pieces]
        closing = []
        if reply.tool_calls:  # whole, in one event
            calls = [self._call(c) for c in reply.tool_calls]
            closing.append(self.event(self._chunk(model, calls, prompt)))
        last = self._response(reply, model, [{"text": ""}], self.finish[reply.finish])
        closing.append(self.event(last))
        return Frames(opening, content, closing)

    def embeddings(self, reply: Reply, model: str, inputs: list[str], dims: int) -> dict[str, Any]:
        body: dict[str, Any] = load("gemini", "embed")
        body["embeddings"] = [
            {"values": _vector(reply, text, i, dims)} for i, text in enumerate(inputs)
        ]
        return body

    def error_body(self, fail: Fail) -> dict[str, Any]:
        status, message = self._errors.get(fail.status) or (
            ("INTERNAL", "Internal error encountered.")
            if fail.status >= 500
            else ("INVALID_ARGUMENT", "Request contains an invalid argument.")
        )
        kind = fail.kind or status
        if kind == "RESOURCE_EXHAUSTED":
            body: dict[str, Any] = load("gemini", "quota_error")
            details = body["error"]["details"]
            details[-1]["retryDelay"] = f"{fail.retry_after}s"
            if fail.retry_after is None:  # a quota that no wait will restore
                del details[-1]
        else:
            body = load("gemini", "error")
            if fail.code is None:  # `code` names the ErrorInfo reason, e.g. "API_KEY_INVALID"
                del body["error"]["details"]
            else:
                body["error"]["details"][0]["reason"] = fail.code
                body["error"]["details"][1]["message"] = fail.message or message
        body["error"].update(code=fail.status, message=fail.message or message, status=kind)
        return body

    def stream_error(self, fail: Fail) -> str:
        return self.event(self.error_body(fail))

    def malformed_body(self) -> bytes:
        return b'{"candidates": [{"content": {"parts": [{"text": "Hel'

    def malformed_frame(self) -> str:
        return 'data: {"candidates": [{"content": {"parts": [{"te\n\n'

    def models(self) -> dict[str, Any]:
        return load("gemini", "models")  # type: ignore[no-any-return]


class VertexWire(GeminiWire):
    """Vertex AI: the Gemini wire on its regional endpoints; embeddings are `:predict` with
    `instances` in, `predictions[].embeddings` out, and probe() reads a publisher model."""

    vendor = "vertex"

    def embeddings(self, reply: Reply, model: str, inputs: list[str], dims: int) -> dict[str, Any]:
        body: dict[str, Any] = load("vertex", "predict")
        row = body["predictions"][0]
        body["predictions"] = []
        for i, text in enumerate(inputs):
            embedding = {**row["embeddings"], "values": _vector(reply, text, i, dims)}
            embedding["statistics"] = {"truncated": False, "token_count": len(text.split())}
            body["predictions"].append({"embeddings": embedding})
        body["metadata"]["billableCharacterCount"] = sum(len(t) for t in inputs)
        return body

    def models(self) -> dict[str, Any]:
        return load("vertex", "model")  # type: ignore[no-any-return]


class BedrockWire:
    """The Bedrock runtime: Converse answers as JSON, ConverseStream in AWS's binary event-stream
    framing (aws.py), errors as `{"message"}` with the type in x-amzn-ErrorType (and, inside a
    stream, as exception messages); embeddings by InvokeModel, Titan's or Cohere's body by the
    model id; probe()'s ListFoundationModels on the control plane."""

    vendor = "bedrock"
    stream_content_type = "application/vnd.amazon.eventstream"
    finish = {
        "stop": "end_turn",
        "length": "max_tokens",
        "content_filter": "content_filtered",
        "tool_calls": "tool_use",
    }
    _types = {
        400: "ValidationException",
        401: "UnrecognizedClientException",
        403: "AccessDeniedException",
        404: "ResourceNotFoundException",
        408: "ModelTimeoutException",
        424: "ModelErrorException",
        429: "ThrottlingException",
        500: "InternalServerException",
        503: "ServiceUnavailableException",
    }
    _messages = {
        "ValidationException": "Malformed input request, please reformat your input and try again.",
        "UnrecognizedClientException": "The security token included in the request is invalid.",
        "AccessDeniedException": "You don't have access to the model with the specified model ID.",
        "ResourceNotFoundException": "Could not resolve the foundation model from the provided "
        "model identifier.",
        "ModelTimeoutException": "Model has timed out in processing the request.",
        "ThrottlingException": load("bedrock", "error")["message"],
        "InternalServerException": "The server encountered an internal error while processing "
        "the request.",
        "ServiceUnavailableException": "Bedrock is unable to process your request.",
    }

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "inputTokens": reply.prompt_tokens - reply.cached_tokens,
            "outputTokens": reply.output_tokens,
            "totalTokens": reply.prompt_tokens + reply.output_tokens,
            "cacheReadInputTokens": reply.cached_tokens,
            "cacheWriteInputTokens": 0,
        }

    @staticmethod
    def _tool_use(call: Call) -> dict[str, Any]:
        use = {"toolUseId": call.id, "name": call.name, "input": json.loads(call.arguments)}
        return {"toolUse": use}

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        body: dict[str, Any] = load("bedrock", "converse")
        blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            text = {"text": reply.reasoning, "signature": "EqQBfake"}
            blocks.append({"reasoningContent": {"reasoningText": text}})
        if reply.text or not reply.tool_calls:
            blocks.append({"text": reply.text})
        blocks.extend(self._tool_use(c) for c in reply.tool_calls)
        body["output"]["message"]["content"] = blocks
        body.update(stopReason=self.finish[reply.finish], usage=self._usage(reply))
        return body

    @staticmethod
    def _event(kind: str, obj: dict[str, Any]) -> bytes:
        template: dict[str, Any] = load("bedrock", "events")[kind]
        padding = template.pop("p", None)
        payload = {**obj, "p": padding} if padding else obj
        return aws.event(kind, _dump(payload).encode())

    def frames(self, reply: Reply, model: str) -> Frames:
        index = 0
        opening = [self._event("messageStart", {"role": "assistant"})]
        if reply.reasoning:
            opening += [
                self._event(
                    "contentBlockDelta",
                    {"delta": {"reasoningContent": {"text": piece}}, "contentBlockIndex": index},
                )
                for piece in _halves(reply.reasoning)
            ]
            opening.append(
                self._event(
                    "contentBlockDelta",
                    {
                        "delta": {"reasoningContent": {"signature": "EqQBfake"}},
                        "contentBlockIndex": index,
                    },
                )
            )
            opening.append(self._event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        text = bool(reply.text or not reply.tool_calls)
        content = [
            self._event("contentBlockDelta", {"delta": {"text": p}, "contentBlockIndex": index})
            for p in reply.pieces
        ]
        closing = [self._event("contentBlockStop", {"contentBlockIndex": index})] if text else []
        index += 1 if text else 0
        for call in reply.tool_calls:
            start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
            closing.append(
                self._event("contentBlockStart", {"start": start, "contentBlockIndex": index})
            )
            closing += [
                self._event(
                    "contentBlockDelta",
                    {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": index},
                )
                for piece in _halves(call.arguments)
            ]
            closing.append(self._event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        closing.append(self._event("messageStop", {"stopReason": self.finish[reply.finish]}))
        metadata = {"usage": self._usage(reply), "metrics": {"latencyMs": 388}}
        closing.append(self._event("metadata", metadata))
        return Frames(opening, content, closing)

    def embeddings(self, reply: Reply, model: str, inputs: list[str], dims: int) -> dict[str, Any]:
        if "titan" in model:
            body: dict[str, Any] = load("bedrock", "titan_embed")
            vector = _vector(reply, inputs[0] if inputs else "", 0, dims)
            body.update(embedding=vector, embeddingsByType={"float": vector})
            body["inputTextTokenCount"] = len(inputs[0].split()) if inputs else 0
            return body
        body = load("bedrock", "cohere_embed")
        body.update(
            id=_id(""),
            embeddings=[_vector(reply, text, i, dims) for i, text in enumerate(inputs)],
            texts=inputs,
        )
        return body

    def error_type(self, fail: Fail) -> str:
        return (
            fail.kind
            or self._types.get(fail.status)
            or ("InternalServerException" if fail.status >= 500 else "ValidationException")
        )

    def error_headers(self, fail: Fail) -> dict[str, str]:
        kind = self.error_type(fail)
        return {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}

    def error_body(self, fail: Fail) -> dict[str, Any]:
        body: dict[str, Any] = load("bedrock", "error")
        body["message"] = fail.message or self._messages.get(self.error_type(fail), "Error")
        return body

    def stream_error(self, fail: Fail) -> bytes:
        """An exception message: its type lower-camel-cased, as ConverseStream names them."""
        kind = self.error_type(fail)
        return aws.exception(kind[:1].lower() + kind[1:], _dump(self.error_body(fail)).encode())

    def malformed_body(self) -> bytes:
        return b'{"output": {"message": {"role": "assistant", "content": [{"te'

    def malformed_frame(self) -> bytes:
        return aws.event("contentBlockDelta", b'{"delta": {"text": "Hel')

    def models(self) -> dict[str, Any]:
        return load("bedrock", "foundation_models")  # type: ignore[no-any-return]


Wire = OpenAIWire | AnthropicWire | OllamaWire | GeminiWire | BedrockWire
WIRES: dict[str, Wire] = {
    "openai": OpenAIWire(),
    "azure": AzureWire(),
    "anthropic": AnthropicWire(),
    "ollama": OllamaWire(),
    "gemini": GeminiWire(),
    "vertex": VertexWire(),
    "bedrock": BedrockWire(),
}
