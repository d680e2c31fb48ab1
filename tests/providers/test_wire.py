"""The adapters' pure wire functions against real vendor payloads (tests/fakes/payloads/, the
same files the fake upstream renders from): request bodies, responses, stream chunks, finish
reasons and error classification."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hapaxd.core.failures import FailureClass
from hapaxd.core.types import (
    Chunk,
    CompletionRequest,
    FinishReason,
    Message,
    Role,
    ToolCall,
    Usage,
)
from hapaxd.providers import anthropic, gemini, ollama, openai
from tests.fakes.payloads import load
from tests.fakes.upstream import Reply
from tests.fakes.upstream.wire import WIRES

FULL = CompletionRequest(
    model="m",
    messages=(
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.USER, "Hi"),
        Message(Role.ASSISTANT, "Hello."),
        Message(Role.SYSTEM, "Answer in French."),
        Message(Role.USER, "How are you?"),
    ),
    max_tokens=64,
    temperature=0.2,
    top_p=0.9,
    stop=("\n\n", "END"),
    user="user-42",
)
MINIMAL = CompletionRequest(model="m", messages=(Message(Role.USER, "Hi"),))


# OpenAI ----------------------------------------------------------------------------------------

OPENAI_COMPLETION = load("openai", "completion")


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = load("openai", "chunk")
    chunk["choices"][0].update(delta=delta, finish_reason=finish)
    return chunk


def test_openai_to_wire_full() -> None:
    assert openai.to_wire(FULL) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "How are you?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "user": "user-42",
    }


def test_openai_to_wire_leaves_unset_fields_out_and_streams_with_usage() -> None:
    assert openai.to_wire(MINIMAL) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body = openai.to_wire(MINIMAL, stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_openai_to_wire_zero_temperature_is_sent() -> None:
    body = openai.to_wire(CompletionRequest(model="m", messages=(), temperature=0.0))
    assert body["temperature"] == 0.0


def test_openai_to_wire_max_completion_tokens_option() -> None:
    body = openai.to_wire(FULL, max_tokens_field="max_completion_tokens")
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


def test_openai_from_wire() -> None:
    completion = openai.from_wire(OPENAI_COMPLETION)
    assert completion.text == "The image shows a wooden boardwalk."
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(1117, 46)
    assert completion.upstream_model == "gpt-4o-2024-08-06"


def test_openai_from_wire_tool_call_with_null_content() -> None:
    body = {
        **OPENAI_COMPLETION,
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
            }
        ],
    }
    completion = openai.from_wire(body)
    assert completion.text == "" and completion.finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.parametrize("body", [[], "text", {"id": "x"}, {"choices": []}, {"choices": "x"}])
def test_openai_from_wire_rejects_non_completions(body: Any) -> None:
    with pytest.raises(ValueError):
        openai.from_wire(body)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("function_call", FinishReason.TOOL_CALLS),
        ("something_new", FinishReason.UNSPECIFIED),
        (None, FinishReason.UNSPECIFIED),
    ],
)
def test_openai_finish_reasons(wire: Any, reason: FinishReason) -> None:
    assert openai.finish_reason(wire) is reason


def test_openai_chunk_from_wire_sequence() -> None:
    role = _chunk({"role": "assistant", "content": "", "refusal": None})
    text = _chunk({"content": "Hel"})
    finish = _chunk({}, "length")
    usage = load("openai", "usage_chunk")
    assert openai.chunk_from_wire(role) is None
    assert openai.chunk_from_wire(text) == Chunk(delta="Hel", upstream_model="gpt-4o-mini")
    assert openai.chunk_from_wire(finish) == Chunk(
        finish_reason=FinishReason.LENGTH, upstream_model="gpt-4o-mini"
    )
    assert openai.chunk_from_wire(usage) == Chunk(usage=Usage(9, 12), upstream_model="gpt-4o-mini")


def test_openai_chunk_from_wire_usage_with_null_choices_and_azure_preamble() -> None:
    vllm = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": None,
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    assert openai.chunk_from_wire(vllm) == Chunk(usage=Usage(1, 2), upstream_model="m")
    azure = load("azure", "preamble")
    assert openai.chunk_from_wire(azure) is None
    with pytest.raises(ValueError):
        openai.chunk_from_wire(["not", "a", "chunk"])


def _openai_error(kind: str, code: str | None, message: str = "m") -> dict[str, Any]:
    body: dict[str, Any] = load("openai", "error")
    body["error"].update(message=message, type=kind, code=code)
    return body


def _azure_error(code: str, message: str) -> dict[str, Any]:
    body: dict[str, Any] = load("azure", "error")
    body["error"].update(code=code, message=message)
    return body


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (429, _openai_error("insufficient_quota", "insufficient_quota"), FailureClass.CREDENTIAL),
        (429, _openai_error("requests", "rate_limit_exceeded"), FailureClass.RATE_LIMITED),
        (
            400,
            _openai_error("invalid_request_error", "context_length_exceeded"),
            FailureClass.CALLER,
        ),
        (400, _openai_error("invalid_request_error", None), FailureClass.CALLER),
        (401, _openai_error("invalid_request_error", "invalid_api_key"), FailureClass.CREDENTIAL),
        (
            403,
            _openai_error("invalid_request_error", "unsupported_country_region_territory"),
            FailureClass.CREDENTIAL,
        ),
        (
            404,
            _openai_error("invalid_request_error", "model_not_found"),
            FailureClass.MODEL_UNAVAILABLE,
        ),
        (408, "timeout", FailureClass.TIMEOUT),
        (500, _openai_error("server_error", None), FailureClass.TRANSIENT),
        (502, "<html>Bad Gateway</html>", FailureClass.TRANSIENT),
        (503, _azure_error("503", "Service unavailable"), FailureClass.TRANSIENT),
        (429, load("azure", "error"), FailureClass.RATE_LIMITED),
    ],
)
def test_openai_classify(status: int, body: Any, failure: FailureClass) -> None:
    assert openai.classify(status, body) is failure


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_openai_error("server_error", None), 500),
        (_openai_error("requests", "rate_limit_exceeded"), 429),
        (_openai_error("insufficient_quota", "insufficient_quota"), 429),
        (_openai_error("invalid_request_error", "context_length_exceeded"), 400),
        (
            {
                "error": {
                    "object": "error",
                    "message": "bad",
                    "type": "BadRequestError",
                    "code": 400,
                }
            },
            400,
        ),
        (_azure_error("429", "Azure rate limit"), 429),
        ({"error": {"message": "weird"}}, 500),
    ],
)
def test_openai_error_status_of_stream_errors(body: Any, status: int) -> None:
    assert openai.error_status(body) == status


def test_openai_error_message_names_the_code() -> None:
    body = _openai_error("insufficient_quota", "insufficient_quota", "You exceeded your quota.")
    assert openai.error_message(body) == "You exceeded your quota. (insufficient_quota)"
    assert openai.error_message("<html>502</html>") == "<html>502</html>"


# Anthropic -------------------------------------------------------------------------------------

ANTHROPIC_MESSAGE = load("anthropic", "message")


def test_anthropic_to_wire_full_leaves_out_the_sampling_settings_its_api_has_not() -> None:
    assert anthropic.to_wire(FULL) == {
        "model": "m",
        "max_tokens": 64,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
        ],
        "stop_sequences": ["\n\n", "END"],
        "metadata": {"user_id": "user-42"},
    }


def test_anthropic_to_wire_always_sends_max_tokens() -> None:
    assert anthropic.to_wire(MINIMAL) == {
        "model": "m",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body = anthropic.to_wire(MINIMAL, stream=True, default_max_tokens=4096)
    assert body["max_tokens"] == 4096 and body["stream"] is True


def test_anthropic_from_wire_joins_text_blocks_only() -> None:
    completion = anthropic.from_wire(ANTHROPIC_MESSAGE)
    assert completion.text == "Hi! I'm Claude."
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(2095, 503)
    assert completion.upstream_model == "claude-sonnet-4-20250514"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", FinishReason.UNSPECIFIED),
        (None, FinishReason.UNSPECIFIED),
    ],
)
def test_anthropic_stop_reasons(wire: Any, reason: FinishReason) -> None:
    assert anthropic.stop_reason(wire) is reason
    assert anthropic.from_wire({**ANTHROPIC_MESSAGE, "stop_reason": wire}).finish_reason is reason


@pytest.mark.parametrize("body", [None, {"type": "message"}, {"content": "text"}])
def test_anthropic_from_wire_rejects_non_messages(body: Any) -> None:
    with pytest.raises(ValueError):
        anthropic.from_wire(body)


def _anthropic_error(kind: str, message: str = "m") -> dict[str, Any]:
    body: dict[str, Any] = load("anthropic", "error")
    body["error"].update(type=kind, message=message)
    return body


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (400, _anthropic_error("invalid_request_error"), FailureClass.CALLER),
        (
            400,
            _anthropic_error(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API.",
            ),
            FailureClass.CREDENTIAL,
        ),
        (
            401,
            _anthropic_error("authentication_error", "invalid x-api-key"),
            FailureClass.CREDENTIAL,
        ),
        (402, _anthropic_error("billing_error"), FailureClass.CREDENTIAL),
        (403, _anthropic_error("permission_error"), FailureClass.CREDENTIAL),
        (404, _anthropic_error("not_found_error"), FailureClass.MODEL_UNAVAILABLE),
        (413, _anthropic_error("request_too_large"), FailureClass.CALLER),
        (429, _anthropic_error("rate_limit_error"), FailureClass.RATE_LIMITED),
        (500, _anthropic_error("api_error"), FailureClass.TRANSIENT),
        (529, _anthropic_error("overloaded_error", "Overloaded"), FailureClass.TRANSIENT),
        (504, "upstream timed out", FailureClass.TIMEOUT),
    ],
)
def test_anthropic_classify(status: int, body: Any, failure: FailureClass) -> None:
    assert anthropic.classify(status, body) is failure


# Ollama ----------------------------------------------------------------------------------------

OLLAMA_DONE = load("ollama", "chat")


def test_ollama_to_wire_full() -> None:
    body = ollama.to_wire(FULL)
    assert body["stream"] is False
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert len(body["messages"]) == 5
    assert body["options"] == {
        "num_predict": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
    }


def test_ollama_to_wire_minimal_sends_stream_flag_and_no_options() -> None:
    assert ollama.to_wire(MINIMAL) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
    }
    assert ollama.to_wire(MINIMAL, stream=True)["stream"] is True


def test_ollama_from_wire() -> None:
    completion = ollama.from_wire(OLLAMA_DONE)
    assert completion.text == "Hello! How are you today?"
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(26, 298)
    assert completion.upstream_model == "llama3.2"


def test_ollama_from_wire_without_counts_and_length() -> None:
    body = {k: v for k, v in OLLAMA_DONE.items() if k != "prompt_eval_count"}
    completion = ollama.from_wire({**body, "done_reason": "length"})
    assert completion.usage == Usage(0, 298) and completion.finish_reason is FinishReason.LENGTH


def test_ollama_chunk_from_wire_records() -> None:
    part = load("ollama", "chunk")
    assert ollama.chunk_from_wire(part) == Chunk(delta="The", upstream_model="llama3.2")
    empty = {**part, "message": {"role": "assistant", "content": ""}}
    assert ollama.chunk_from_wire(empty) is None
    final = ollama.chunk_from_wire({**OLLAMA_DONE, "message": {"role": "assistant", "content": ""}})
    assert final == Chunk(
        finish_reason=FinishReason.STOP, usage=Usage(26, 298), upstream_model="llama3.2"
    )
    with pytest.raises(ValueError):
        ollama.chunk_from_wire("nope")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("unload", FinishReason.UNSPECIFIED),
        (None, FinishReason.UNSPECIFIED),
    ],
)
def test_ollama_done_reasons(wire: Any, reason: FinishReason) -> None:
    assert ollama.done_reason(wire) is reason


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (400, FailureClass.CALLER),
        (404, FailureClass.MODEL_UNAVAILABLE),
        (500, FailureClass.TRANSIENT),
        (503, FailureClass.TRANSIENT),
    ],
)
def test_ollama_classify(status: int, failure: FailureClass) -> None:
    assert ollama.classify(status, {**load("ollama", "error"), "error": "x"}) is failure


# Gemini ----------------------------------------------------------------------------------------

GEMINI_ANSWER = load("gemini", "generate")


def test_gemini_to_wire_full() -> None:
    """System prompts join in systemInstruction; the assistant is "model"; there is no user
    field in the Gemini API, so `user` is not sent."""
    assert gemini.to_wire(FULL) == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "How are you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nAnswer in French."}]},
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["\n\n", "END"],
        },
    }
    assert gemini.to_wire(MINIMAL) == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_gemini_from_wire() -> None:
    """Thinking tokens are output tokens Gemini counts apart: added to completion_tokens."""
    completion = gemini.from_wire(GEMINI_ANSWER)
    assert completion.text == "The image shows a wooden boardwalk through a green meadow."
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(1290, 45, reasoning_tokens=31)
    assert completion.upstream_model == "gemini-2.5-flash"
    assert gemini.from_wire({**GEMINI_ANSWER, "modelVersion": "models/gemini-2.0-flash"}) == (
        dataclasses.replace(completion, upstream_model="gemini-2.0-flash")
    )


@pytest.mark.parametrize("body", [None, [], {"candidates": []}, {"candidates": "x"}, {}])
def test_gemini_from_wire_rejects_non_answers(body: Any) -> None:
    with pytest.raises(ValueError):
        gemini.from_wire(body)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("OTHER", FinishReason.UNSPECIFIED),
        (None, FinishReason.UNSPECIFIED),
    ],
)
def test_gemini_finish_reasons(wire: Any, reason: FinishReason) -> None:
    assert gemini.finish_reason(wire) is reason


def test_gemini_tool_results_find_their_function() -> None:
    """By the call earlier in the request; else by the name in an id of ours."""
    request = CompletionRequest(
        model="m",
        messages=(
            Message(Role.USER, "Hi"),
            Message(Role.ASSISTANT, "", tool_calls=(ToolCall("abc", "lookup", "{}"),)),
            Message(Role.TOOL, "[1, 2]", tool_call_id="abc"),
            Message(Role.TOOL, "ok", tool_call_id="call_3_get_time"),
        ),
    )
    results = gemini.to_wire(request)["contents"][2]["parts"]
    assert results == [
        {"functionResponse": {"name": "lookup", "response": {"output": "[1, 2]"}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "ok"}}},
    ]


def _gemini_error(status: int, kind: str, message: str = "m") -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": kind}}


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (400, load("gemini", "error"), FailureClass.CREDENTIAL),  # API_KEY_INVALID
        (400, _gemini_error(400, "INVALID_ARGUMENT"), FailureClass.CALLER),
        (400, _gemini_error(400, "FAILED_PRECONDITION"), FailureClass.CREDENTIAL),
        (401, _gemini_error(401, "UNAUTHENTICATED"), FailureClass.CREDENTIAL),
        (403, _gemini_error(403, "PERMISSION_DENIED"), FailureClass.CREDENTIAL),
        (404, _gemini_error(404, "NOT_FOUND"), FailureClass.MODEL_UNAVAILABLE),
        (429, load("gemini", "quota_error"), FailureClass.RATE_LIMITED),
        (500, _gemini_error(500, "INTERNAL"), FailureClass.TRANSIENT),
        (503, _gemini_error(503, "UNAVAILABLE"), FailureClass.TRANSIENT),
        (504, _gemini_error(504, "DEADLINE_EXCEEDED"), FailureClass.TIMEOUT),
        (502, "<html>Bad Gateway</html>", FailureClass.TRANSIENT),
    ],
)
def test_gemini_classify(status: int, body: Any, failure: FailureClass) -> None:
    assert gemini.classify(status, body) is failure


def test_gemini_retry_delay_status_and_message() -> None:
    quota = load("gemini", "quota_error")
    assert gemini.retry_delay(quota) == 12.0
    quota["error"]["details"][-1]["retryDelay"] = "0.250s"
    assert gemini.retry_delay(quota) == 0.25
    assert gemini.retry_delay(_gemini_error(429, "RESOURCE_EXHAUSTED")) is None
    assert gemini.error_status({"error": {"status": "RESOURCE_EXHAUSTED"}}) == 429
    assert gemini.error_status(_gemini_error(503, "UNAVAILABLE")) == 503
    assert gemini.error_message(_gemini_error(404, "NOT_FOUND", "no model")) == (
        "no model (NOT_FOUND)"
    )


# The fake upstream and these tests read the same payloads ----------------------------------------


def _shape(value: Any) -> Any:
    """The key structure of a JSON value: dict keys in order and list element shapes, not the
    values."""
    if isinstance(value, dict):
        return tuple((key, _shape(item)) for key, item in value.items())
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return None


# (vendor, the sample its completion is rendered from, the adapter that reads it)
SHARED = [
    ("openai", ("openai", "completion"), openai),
    ("azure", ("openai", "completion"), openai),  # Azure answers in OpenAI's shape
    ("anthropic", ("anthropic", "message"), anthropic),
    ("ollama", ("ollama", "chat"), ollama),
    ("gemini", ("gemini", "generate"), gemini),
]


@pytest.mark.parametrize(("vendor", "payload", "adapter"), SHARED, ids=[v for v, _, _ in SHARED])
def test_fake_upstream_renders_the_shared_payloads(
    vendor: str, payload: tuple[str, str], adapter: Any
) -> None:
    reply = Reply(text="Shared shape.", prompt_tokens=7, completion_tokens=5)
    rendered = WIRES[vendor].completion(reply, "some-model")
    sample = load(*payload)
    if vendor == "anthropic":  # the sample shows every block type; the fake answers in text
        sample["content"] = sample["content"][1:2]
    assert _shape(rendered) == _shape(sample)
    completion = adapter.from_wire(rendered)
    assert completion.text == "Shared shape."
    assert completion.usage == Usage(7, 5)
    assert completion.upstream_model == "some-model"
