"""Vendor wire formats the fake upstream speaks: OpenAI (and Azure's variant), Anthropic, Ollama.

Payloads use the vendors' real field names and shapes; each vendor renders a Reply as a whole
answer or as stream frames, a Fail as its error body, and its model list.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .behaviours import Fail, Reply

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):024d}"


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


class Frames:
    """One stream: opening frames, one frame per content piece, closing frames."""

    def __init__(self, opening: list[str], content: list[str], closing: list[str]) -> None:
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
        return {
            "id": _id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": self.finish[reply.finish],
                }
            ],
            "usage": self._usage(reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake0000",
        }

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.prompt_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def frames(self, reply: Reply, model: str) -> Frames:
        base = {
            "id": _id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0000",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self.event({**base, "choices": [choice], "usage": None})

        opening = [*self.preamble(), chunk({"role": "assistant", "content": "", "refusal": None})]
        content = [chunk({"content": piece}) for piece in reply.pieces]
        closing = [
            chunk({}, self.finish[reply.finish]),
            self.event({**base, "choices": [], "usage": self._usage(reply)}),
        ]
        if reply.done_marker:
            closing.append("data: [DONE]\n\n")
        return Frames(opening, content, closing)

    def preamble(self) -> list[str]:
        return []

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
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def stream_error(self, fail: Fail) -> str:
        return self.event(self.error_body(fail))

    def malformed_body(self) -> bytes:
        return b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, '

    def malformed_frame(self) -> str:
        return 'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choi\n\n'

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": "gpt-4o-mini",
                    "object": "model",
                    "created": 1721172741,
                    "owned_by": "system",
                },
                {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
            ],
        }


class AzureWire(OpenAIWire):
    vendor = "azure"
    _filters = {
        name: {"filtered": False, "severity": "safe"}
        for name in ("hate", "self_harm", "sexual", "violence")
    }

    def preamble(self) -> list[str]:
        # Azure opens every stream with a chunk holding only the prompt's content-filter results.
        return [
            self.event(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": self._filters}
                    ],
                }
            )
        ]

    def error_body(self, fail: Fail) -> dict[str, Any]:
        if fail.kind or fail.code:  # request errors pass through in OpenAI's shape
            return super().error_body(fail)
        messages = {
            401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource.",
            429: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing "
            "tier. Please retry after 6 seconds.",
        }
        message = fail.message or messages.get(fail.status) or self.error_fields(fail)[2]
        return {"error": {"code": str(fail.status), "message": message}}

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": "gpt-4o-2024-08-06",
                    "object": "model",
                    "created_at": 1723075200,
                    "status": "succeeded",
                    "lifecycle_status": "generally-available",
                    "capabilities": {
                        "chat_completion": True,
                        "completion": False,
                        "embeddings": False,
                        "fine_tune": True,
                        "inference": True,
                    },
                }
            ],
        }


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
        return {
            "id": _id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        }

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        return self._message(
            reply,
            model,
            [{"type": "text", "text": reply.text}],
            self.finish[reply.finish],
            reply.output_tokens,
        )

    def event(self, obj: dict[str, Any]) -> str:
        return f"event: {obj['type']}\ndata: {_dump(obj)}\n\n"

    def frames(self, reply: Reply, model: str) -> Frames:
        opening = [
            self.event(
                {"type": "message_start", "message": self._message(reply, model, [], None, 1)}
            ),
            self.event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            self.event({"type": "ping"}),
        ]
        content = [
            self.event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
            for piece in reply.pieces
        ]
        closing = [
            self.event({"type": "content_block_stop", "index": 0}),
            self.event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.finish[reply.finish], "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                }
            ),
            self.event({"type": "message_stop"}),
        ]
        return Frames(opening, content, closing)

    def error_body(self, fail: Fail) -> dict[str, Any]:
        kind = (
            fail.kind
            or self._types.get(fail.status)
            or ("api_error" if fail.status >= 500 else "invalid_request_error")
        )
        message = fail.message or self._messages.get(kind, "Error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": _id("req_"),
        }

    def stream_error(self, fail: Fail) -> str:
        body = self.error_body(fail)
        del body["request_id"]
        return self.event(body)

    def malformed_body(self) -> bytes:
        return b'{"id": "msg_broken", "type": "message", "content": [{"type": "text", "te'

    def malformed_frame(self) -> str:
        return 'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def models(self) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": "claude-sonnet-4-20250514",
                "display_name": "Claude Sonnet 4",
                "created_at": "2025-05-22T00:00:00Z",
            }
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }


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

    def _record(self, model: str, content: str, done: bool) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": self._now(),
            "message": {"role": "assistant", "content": content},
            "done": done,
        }

    def _done(self, reply: Reply, model: str, content: str) -> dict[str, Any]:
        return {
            **self._record(model, content, True),
            "done_reason": self.finish[reply.finish],
            "total_duration": 5191566416,
            "load_duration": 2154458,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": 383809000,
            "eval_count": reply.output_tokens,
            "eval_duration": 4799921000,
        }

    def completion(self, reply: Reply, model: str) -> dict[str, Any]:
        return self._done(reply, model, reply.text)

    def frames(self, reply: Reply, model: str) -> Frames:
        content = [_dump(self._record(model, piece, False)) + "\n" for piece in reply.pieces]
        return Frames([], content, [_dump(self._done(reply, model, "")) + "\n"])

    def error_body(self, fail: Fail) -> dict[str, Any]:
        return {"error": fail.message or self._messages.get(fail.status, "internal error")}

    def stream_error(self, fail: Fail) -> str:
        return _dump(self.error_body(fail)) + "\n"

    def malformed_body(self) -> bytes:
        return b'{"model": "llama3.2", "message": {"role": "assistant", "cont'

    def malformed_frame(self) -> str:
        return '{"model": "llama3.2", "created_at": "2024-10-01T00:00:00Z", "mess\n'

    def models(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": "llama3.2:latest",
                    "model": "llama3.2:latest",
                    "modified_at": "2024-10-01T12:00:00.000000-07:00",
                    "size": 2019393189,
                    "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "llama",
                        "families": ["llama"],
                        "parameter_size": "3.2B",
                        "quantization_level": "Q4_K_M",
                    },
                }
            ]
        }


Wire = OpenAIWire | AnthropicWire | OllamaWire
WIRES: dict[str, Wire] = {
    "openai": OpenAIWire(),
    "azure": AzureWire(),
    "anthropic": AnthropicWire(),
    "ollama": OllamaWire(),
}
