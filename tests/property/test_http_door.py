"""Property: whatever JSON a caller posts to the OpenAI-compatible HTTP door, the answer is a 2xx
in OpenAI's shape (a chat completion, its SSE chunks ending in [DONE], embeddings) or a 4xx with
OpenAI's error body `{"error": {"message", "type", "param", "code"}}`; never a 5xx, and never a
stream that ends in an error event. Bodies are random JSON values, and random mutations of valid
bodies (a value replaced, a key removed or added, at any depth). A real gateway (local provider)
runs on its own thread's event loop; a synchronous HTTP client drives it.

The bodies the properties once found a 5xx for are kept as cases of
test_the_bodies_that_were_a_5xx_are_a_400."""

from __future__ import annotations

import base64
import copy
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

CHAT, EMBED = "/chat/completions", "/embeddings"
PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
VALID: list[tuple[str, dict[str, Any]]] = [
    (CHAT, {"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
    (
        CHAT,
        {
            "model": "default",
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
            ],
            "max_tokens": 20,
            "temperature": 0.5,
            "stop": ["\n\n"],
            "metadata": {"tenant": "a"},
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        CHAT,
        {
            "model": "default",
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "And Bergen?"},
            ],
            "tools": [WEATHER],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "seed": 7,
            "reasoning_effort": "low",
        },
    ),
    (
        CHAT,
        {
            "model": "default",
            "messages": [
                {"role": "developer", "content": "json"},
                {"role": "user", "content": "x"},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}, "tags": {"type": "array"}},
                    },
                    "strict": True,
                },
            },
            "top_p": 1,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "user": "u-1",
            "n": 1,
        },
    ),
    (CHAT, {"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    (EMBED, {"model": "default", "input": ["one", "two"], "dimensions": 8}),
    (EMBED, {"model": "default", "input": "one", "encoding_format": "base64"}),
]

# Text, and now and then a lone surrogate: JSON may escape one ("\ud800"), and Python reads it.
SPECIAL = ["", "\x00", "default", "user", "assistant", "tool", "function", "text", "image_url"]
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from([*SPECIAL, "https://example.com/a.png", "\ud800", "a\udfffb"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),  # json.dumps writes NaN, which Python reads
    texts,
)
KEYS = [
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "tools",
    "tool_choice",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "parameters",
    "response_format",
    "json_schema",
    "schema",
    "stream",
    "stream_options",
    "include_usage",
    "stop",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "metadata",
    "input",
    "encoding_format",
    "dimensions",
]
keys = st.one_of(st.sampled_from(KEYS), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def mutated(data: st.DataObject, node: Any) -> Any:
    """`node` with one change somewhere in it: a value replaced, or a key removed or added."""
    if isinstance(node, dict | list) and node and data.draw(st.integers(0, 3), label="go in"):
        where = data.draw(
            st.sampled_from(list(node) if isinstance(node, dict) else range(len(node)))
        )
        how = data.draw(st.sampled_from(["deeper", "deeper", "replace", "remove"]))
        if how == "deeper":
            node[where] = mutated(data, node[where])
        elif how == "replace":
            node[where] = data.draw(json_values)
        else:
            del node[where]
        return node
    if isinstance(node, dict) and data.draw(st.booleans(), label="add a key"):
        node[data.draw(keys)] = data.draw(json_values)
        return node
    return data.draw(json_values)


@pytest.fixture(scope="module")
def http(door_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=door_url, timeout=10) as client:
        yield client


def post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    raw = json.dumps(body)  # NaN and Infinity as Python writes them; lone surrogates escaped
    return http.post(path, content=raw, headers={"content-type": "application/json"})


def note(what: str) -> None:
    """An event for `--hypothesis-show-statistics` (how many of each answer the runs saw)."""
    if currently_in_test_context():
        event(what)


def answered_in_openais_shape(path: str, response: httpx.Response) -> None:
    """A 2xx in OpenAI's shape, or a 4xx with OpenAI's error body; never a 5xx."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        note(f"{path} {response.status_code}")
        body = response.json()
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and error["type"]
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
        return
    assert 200 <= response.status_code < 300, response.status_code
    if path == EMBED:
        note(f"{path} answered")
        body = response.json()
        for item in body["data"]:  # base64: little-endian float32, decoded as the SDK does
            if isinstance(item["embedding"], str):
                raw = base64.b64decode(item["embedding"], validate=True)
                item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        CreateEmbeddingResponse.model_validate(body)
    elif response.headers["content-type"].startswith("text/event-stream"):
        note(f"{path} streamed")
        events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
        assert events[-1] == "[DONE]", events[-3:]
        chunks = [json.loads(data) for data in events[:-1]]
        for chunk in chunks:
            assert "error" not in chunk, chunk  # a stream that broke after its 200
            ChatCompletionChunk.model_validate(chunk)
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] and not any(finishes[:-1]), finishes
    else:
        note(f"{path} answered")
        completion = ChatCompletion.model_validate(response.json())
        assert completion.object == "chat.completion" and completion.choices


DOOR_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@DOOR_SETTINGS
@given(path=st.sampled_from([CHAT, EMBED]), body=json_values)
def test_any_json_body_is_answered_or_refused_in_openais_shape(
    http: httpx.Client, path: str, body: Any
) -> None:
    answered_in_openais_shape(path, post(http, path, body))


@DOOR_SETTINGS
@given(valid=st.sampled_from(VALID), changes=st.integers(1, 3), data=st.data())
def test_any_change_to_a_valid_body_is_answered_or_refused_in_openais_shape(
    http: httpx.Client, valid: tuple[str, dict[str, Any]], changes: int, data: st.DataObject
) -> None:
    path, body = valid[0], copy.deepcopy(valid[1])
    for _ in range(changes):
        body = mutated(data, body)
    answered_in_openais_shape(path, post(http, path, body))


@pytest.mark.parametrize(("path", "body"), VALID)
def test_the_valid_bodies_are_answered(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = post(http, path, body)
    assert response.status_code == 200, response.text
    answered_in_openais_shape(path, response)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from([CHAT, EMBED]), raw=st.binary(max_size=40))
def test_bytes_that_are_not_json_are_a_400(http: httpx.Client, path: str, raw: bytes) -> None:
    try:
        json.loads(raw)
    except ValueError:
        pass
    else:
        assume(False)  # JSON after all: the properties above cover it
    response = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    answered_in_openais_shape(path, response)


HI = {"role": "user", "content": "hi"}
LONE = "hi \ud800"  # a lone surrogate: JSON can escape one, and Python reads it as is


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # each was a 500 (an exception in the door or validation) before the fix
        pytest.param(EMBED, {"model": "default", "input": LONE}, id="surrogate-embed-input"),
        # UnicodeEncodeError in server.py _event() after the 200 went: a 500 written into the
        # chunked SSE body ("illegal chunk header")
        pytest.param(
            CHAT,
            {"model": "default", "messages": [{"role": "user", "content": LONE}], "stream": True},
            id="surrogate-streamed-content",
        ),
        pytest.param(
            CHAT,
            {"model": LONE, "messages": [HI], "stream": True},
            id="surrogate-streamed-model",
        ),
        # UnicodeEncodeError in core/validation.py _check_schema (schema.text.encode()): 500
        pytest.param(
            CHAT,
            {
                "model": "default",
                "messages": [HI],
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"d": LONE}}}
                ],
            },
            id="surrogate-tool-parameters",
        ),
        # the same in _check_options (vendor options' text): 500
        pytest.param(
            CHAT, {"model": "default", "messages": [HI], "x_extra": LONE}, id="surrogate-extra-key"
        ),
        # TypeError in wire._message: ROLES.get(unhashable): 500
        pytest.param(
            CHAT,
            {"model": "default", "messages": [{"role": ["user"], "content": "hi"}]},
            id="role-a-list",
        ),
        # TypeError in wire._message: enumerate(5): 500
        pytest.param(
            CHAT,
            {
                "model": "default",
                "messages": [HI, {"role": "assistant", "content": "x", "tool_calls": 5}],
            },
            id="tool-calls-a-number",
        ),
    ],
)
def test_the_bodies_that_were_a_5xx_are_a_400(
    http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """Bodies the properties once found a 5xx for (a lone surrogate, a role that is a list,
    tool_calls that is a number): each is the caller's mistake, answered 400 before any work."""
    response = post(http, path, body)
    assert response.status_code == 400, response.text
    answered_in_openais_shape(path, response)
