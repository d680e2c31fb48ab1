"""OpenAI's HTTP API shapes, both ways, as pure functions: a request body to the arguments of
core/validation.py, and the gateway's answers to `chat.completion`, `chat.completion.chunk`,
embeddings and model-list objects; an error to OpenAI's error body and HTTP status.

Keys of a chat request the gateway has no field for (e.g. `reasoning_effort`) are not dropped:
they go to OpenAI-compatible upstreams as `vendor_options["openai"]`, validated like any.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hapaxd.calls.errors import ErrorView
from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    Embeddings,
    FinishReason,
    FormatType,
    Image,
    Json,
    Part,
    ResponseFormat,
    Role,
    Route,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
    Usage,
)
from hapaxd.core.validation import RawMessage

ROLES: Mapping[str, Role] = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}
FINISH: Mapping[FinishReason, str | None] = {
    FinishReason.UNSPECIFIED: None,
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.TOOL_CALLS: "tool_calls",
}
TOOL_MODES = {"auto": ToolMode.AUTO, "none": ToolMode.NONE, "required": ToolMode.REQUIRED}
FORMATS = {
    "text": FormatType.TEXT,
    "json_object": FormatType.JSON_OBJECT,
    "json_schema": FormatType.JSON_SCHEMA,
}
# Chat request keys read here; any other goes upstream as an OpenAI vendor option.
KNOWN = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "user",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "n",
        "metadata",
    }
)
# canonical status code name (calls/errors.py ErrorView.code) -> (HTTP status, OpenAI error type)
HTTP_STATUS: Mapping[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "request_cancelled"),
    "UNIMPLEMENTED": (501, "server_error"),
    "UNAVAILABLE": (503, "server_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}


class BodyError(InvalidRequest):
    """A body that is not the shape OpenAI's API takes (before validation proper)."""


def _bad(field: str, why: str) -> BodyError:
    return BodyError([FieldViolation(field, why)])


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, "must be a number")
    return float(value)


def _integer(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, "must be an integer")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return value


def _image(url: str, field: str) -> Image:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        mime = head[len("data:") :].split(";")[0]
        if not sep or ";base64" not in head:
            raise _bad(field, "a data URL must be base64: data:image/png;base64,...")
        try:
            return Image(data=base64.b64decode(data, validate=True), mime_type=mime)
        except (binascii.Error, ValueError):
            raise _bad(field, "not valid base64") from None
    return Image(url=url)


def _content(value: Any, field: str) -> tuple[str, list[Part]]:
    """`content` as (text, parts): a string is text; a list of parts is parts."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        raise _bad(field, "must be a string or a list of content parts")
    parts: list[Part] = []
    for i, part in enumerate(value):
        at = f"{field}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(_text(part.get("text"), f"{at}.text"))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_image(_text(url, f"{at}.image_url.url"), f"{at}.image_url.url"))
        else:
            raise _bad(f"{at}.type", "the gateway takes text and image_url parts")
    return "", parts


def _message(value: Any, i: int) -> RawMessage:
    at = f"messages[{i}]"
    if not isinstance(value, dict):
        raise _bad(at, "must be an object")
    given = value.get("role")
    role = ROLES.get(given) if isinstance(given, str) else None  # unknown: validation says so
    text, parts = _content(value.get("content"), f"{at}.content")
    if role is not Role.USER and parts:  # text parts elsewhere are just text
        if any(isinstance(p, Image) for p in parts):
            raise _bad(f"{at}.content", "images are for user messages")
        text, parts = "".join(p for p in parts if isinstance(p, str)), []
    calls = []
    listed = value.get("tool_calls") or ()
    if not isinstance(listed, list | tuple):
        raise _bad(f"{at}.tool_calls", "must be a list")
    for j, call in enumerate(listed):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise _bad(f"{at}.tool_calls[{j}]", "must be a function tool call")
        calls.append(
            ToolCall(
                id=_text(call.get("id"), f"{at}.tool_calls[{j}].id"),
                name=_text(function.get("name"), f"{at}.tool_calls[{j}].function.name"),
                arguments=_text(
                    function.get("arguments", ""), f"{at}.tool_calls[{j}].function.arguments"
                ),
            )
        )
    call_id = value.get("tool_call_id") or ""
    return RawMessage(role, text, parts, calls, _text(call_id, f"{at}.tool_call_id"))


def _tools(value: Any) -> list[Tool]:
    if not isinstance(value, list):
        raise _bad("tools", "must be a list")
    tools = []
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
        ):
            raise _bad(f"tools[{i}]", "must be {type: function, function: {...}}")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"tools[{i}].function.parameters", "must be a JSON Schema object")
        tools.append(
            Tool(
                name=_text(function.get("name"), f"tools[{i}].function.name"),
                description=_text(function.get("description", ""), f"tools[{i}].function"),
                parameters=Json(parameters) if parameters is not None else None,
                strict=function.get("strict") is True,
            )
        )
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str) and value in TOOL_MODES:
        return ToolChoice(TOOL_MODES[value])
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return ToolChoice(ToolMode.FUNCTION, function["name"])
    raise _bad("tool_choice", 'must be "auto", "none", "required" or a function')


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    kind = FORMATS.get(str(value.get("type"))) if isinstance(value, dict) else None
    if kind is None:
        raise _bad("response_format.type", "must be text, json_object or json_schema")
    if kind is not FormatType.JSON_SCHEMA:
        return ResponseFormat(kind)
    schema = value.get("json_schema")
    if not isinstance(schema, dict):
        raise _bad("response_format.json_schema", "required with type json_schema")
    body = schema.get("schema")
    return ResponseFormat(
        kind,
        name=_text(schema.get("name", ""), "response_format.json_schema.name"),
        description=_text(schema.get("description", ""), "response_format.json_schema"),
        schema=Json(body) if isinstance(body, dict) else None,
        strict=schema.get("strict") is True,
    )


def chat_arguments(body: Any) -> tuple[dict[str, Any], bool, bool]:
    """(the keyword arguments of validation.build_request but request_id and limits, stream?,
    include usage in the stream?) for a /v1/chat/completions body; BodyError if it is not one."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _bad("messages", "must be a list of messages")
    if body.get("n") not in (None, 1):
        raise _bad("n", "the gateway answers one choice (n: 1)")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "must be a string or a list of strings")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _bad("metadata", "must map strings to strings")
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    parallel = body.get("parallel_tool_calls")
    extra = {k: v for k, v in body.items() if k not in KNOWN}
    arguments: dict[str, Any] = {
        "model": _text(body.get("model", ""), "model"),
        "messages": [_message(m, i) for i, m in enumerate(messages)],
        "prompt": "",
        "max_tokens": max_tokens,
        "temperature": _number(body, "temperature"),
        "top_p": _number(body, "top_p"),
        "stop": stops,
        "user": _text(body.get("user") or "", "user"),
        "metadata": metadata,
        "tools": _tools(body["tools"]) if body.get("tools") else [],
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else None,
        "response_format": _response_format(body.get("response_format")),
        "seed": _integer(body, "seed"),
        "presence_penalty": _number(body, "presence_penalty"),
        "frequency_penalty": _number(body, "frequency_penalty"),
        "vendor_options": {"openai": Json(extra)} if extra else None,
    }
    options = body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    return arguments, body.get("stream") is True, usage


def embed_arguments(body: Any) -> tuple[dict[str, Any], str]:
    """(the keyword arguments of validation.build_embedding_request but request_id and limits,
    the encoding: float or base64) for a /v1/embeddings body; BodyError if it is not one."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
        raise _bad("input", "must be a string or a list of strings (token arrays are not taken)")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", "must be float or base64")
    arguments: dict[str, Any] = {
        "model": _text(body.get("model", ""), "model"),
        "inputs": inputs,
        "dimensions": _integer(body, "dimensions"),
        "user": _text(body.get("user") or "", "user"),
        "metadata": {},
    }
    return arguments, encoding


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def completion_body(
    completion: Completion, route: Route, request: CompletionRequest, created: int | None = None
) -> dict[str, Any]:
    """A `chat.completion` object; `model` is the logical model asked for."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
        "refusal": None,
    }
    if completion.tool_calls:
        message["tool_calls"] = _calls(completion.tool_calls)
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    return {
        "id": completion_id(request.request_id),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH[completion.finish_reason] or "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(completion.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """`chat.completion.chunk` objects for one stream: a role chunk first, then one per piece,
    the finish chunk, and (include_usage) a usage chunk with no choices."""

    def __init__(self, request: CompletionRequest, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._head = {
            "id": completion_id(request.request_id),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": None,
        }
        self._started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._head, "choices": [choice]}

    def pieces(self, chunk: Chunk) -> list[dict[str, Any]]:
        out = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        delta: dict[str, Any] = {}
        if chunk.delta:
            delta["content"] = chunk.delta
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": d.index,
                    **({"id": d.id, "type": "function"} if d.id else {}),
                    "function": {
                        **({"name": d.name} if d.name else {}),
                        "arguments": d.arguments,
                    },
                }
                for d in chunk.tool_calls
            ]
        if delta:
            out.append(self._chunk(delta))
        return out

    def end(self, finish: FinishReason, usage: Usage) -> list[dict[str, Any]]:
        out = self.pieces(Chunk()) if not self._started else []
        out.append(self._chunk({}, FINISH[finish] or "stop"))
        if self.include_usage:
            out.append({**self._head, "choices": [], "usage": _usage(usage)})
        return out


def embeddings_body(vectors: Embeddings, request_model: str, encoding: str) -> dict[str, Any]:
    def encoded(vector: tuple[float, ...]) -> Any:
        if encoding == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return list(vector)

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encoded(v)}
            for i, v in enumerate(vectors.vectors)
        ],
        "model": request_model,
        "usage": {
            "prompt_tokens": vectors.usage.prompt_tokens,
            "total_tokens": vectors.usage.prompt_tokens,
        },
    }


def models_body(names: Sequence[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "hapax"} for n in names],
    }


def error_body(view: ErrorView) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI's error body) for a failed call's ErrorView: the status by its code,
    `code` its reason in lower case, `param` its first field violation."""
    status, kind = HTTP_STATUS.get(view.code, (500, "server_error"))
    if view.reason == "CACHE_MISS":  # RFC 9111: only-if-cached with nothing stored is a 504
        status, kind = 504, "cache_miss"
    param = view.violations[0][0] if view.violations else None
    body = {"message": view.message, "type": kind, "param": param, "code": view.reason.lower()}
    return status, {"error": body}


def retry_after_header(view: ErrorView) -> dict[str, str]:
    """`Retry-After` in whole seconds, for a view with a retry delay."""
    wait = view.retry_after
    return {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else {}
