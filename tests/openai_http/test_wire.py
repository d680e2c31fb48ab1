"""The HTTP door's translation functions (openai_http/wire.py), one by one, without a server:
every way a chat or embeddings body can be refused names its field, what is taken becomes the
domain arguments validation.build_request takes, and the answers have OpenAI's shapes (judged by
the openai SDK's own types, and by their exact keys)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from hapaxd.calls.errors import view_of
from hapaxd.core.errors import (
    ApiKeyMissing,
    CapabilityMissing,
    DeadlineExceeded,
    FieldViolation,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RateLimited,
)
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    Embeddings,
    FinishReason,
    FormatType,
    Image,
    Json,
    Message,
    ResponseFormat,
    Role,
    Route,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
)
from hapaxd.core.validation import build_request
from hapaxd.openai_http.wire import (
    BodyError,
    ChunkWriter,
    chat_arguments,
    completion_body,
    embed_arguments,
    embeddings_body,
    error_body,
    models_body,
    retry_after_header,
)

USER = {"role": "user", "content": "hi"}
PNG = b"\x89PNG\r\n\x1a\n fake"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


def chat(**fields: Any) -> dict[str, Any]:
    """A valid chat body, with `fields` replaced (a value of None removes the key)."""
    body: dict[str, Any] = {"model": "default", "messages": [USER], **fields}
    return {k: v for k, v in body.items() if v is not None}


def message(**fields: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", **fields}])


def refused(body: Any, *, embed: bool = False) -> FieldViolation:
    with pytest.raises(BodyError) as caught:
        embed_arguments(body) if embed else chat_arguments(body)
    assert isinstance(caught.value, InvalidRequest)  # what the door maps to a 400
    [violation] = caught.value.violations
    return violation


# --- chat request: refused, with the field that is wrong ----------------------------------------


@pytest.mark.parametrize("body", [None, [], "x", 3, True, [USER]])
def test_a_body_that_is_not_an_object(body: Any) -> None:
    assert refused(body) == FieldViolation("body", "must be a JSON object")
    assert refused(body, embed=True) == FieldViolation("body", "must be a JSON object")


@pytest.mark.parametrize("messages", [None, "hi", {"role": "user"}, 3])
def test_messages_that_are_not_a_list(messages: Any) -> None:
    body = chat(messages=None) if messages is None else chat(messages=messages)
    assert refused(body) == FieldViolation("messages", "must be a list of messages")


@pytest.mark.parametrize("n", [0, 2, -1, "1", [1]])
def test_more_than_one_choice(n: Any) -> None:
    assert refused(chat(n=n)) == FieldViolation("n", "the gateway answers one choice (n: 1)")


def test_one_choice_is_taken() -> None:
    assert chat_arguments(chat(n=1))[0]["messages"]


@pytest.mark.parametrize("stop", [3, {"a": "b"}, ["ok", 3], [None], [["x"]]])
def test_a_stop_that_is_not_strings(stop: Any) -> None:
    assert refused(chat(stop=stop)) == FieldViolation(
        "stop", "must be a string or a list of strings"
    )


@pytest.mark.parametrize("metadata", ["x", ["a"], {"a": 1}, {"a": None}, {"a": ["b"]}])
def test_metadata_that_does_not_map_strings_to_strings(metadata: Any) -> None:
    assert refused(chat(metadata=metadata)) == FieldViolation(
        "metadata", "must map strings to strings"
    )


@pytest.mark.parametrize("key", ["max_completion_tokens", "max_tokens", "seed"])
@pytest.mark.parametrize("value", [1.5, 2.0, "10", True, [1], {"n": 1}])
def test_integers_that_are_not(key: str, value: Any) -> None:
    assert refused(chat(**{key: value})) == FieldViolation(key, "must be an integer")


@pytest.mark.parametrize("key", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", ["0.5", True, False, [0.5], {"v": 1}])
def test_numbers_that_are_not(key: str, value: Any) -> None:
    assert refused(chat(**{key: value})) == FieldViolation(key, "must be a number")


@pytest.mark.parametrize("key", ["model", "user"])
@pytest.mark.parametrize("value", [3, ["x"], {"a": "b"}, True])
def test_strings_that_are_not(key: str, value: Any) -> None:
    assert refused(chat(**{key: value})) == FieldViolation(key, "must be a string")


@pytest.mark.parametrize("turn", ["hi", 3, None, ["user", "hi"]])
def test_a_message_that_is_not_an_object(turn: Any) -> None:
    body = chat(messages=[USER, turn])
    assert refused(body) == FieldViolation("messages[1]", "must be an object")


@pytest.mark.parametrize("content", [3, {"type": "text", "text": "hi"}, True, 1.5])
def test_content_that_is_neither_text_nor_parts(content: Any) -> None:
    assert refused(message(content=content)) == FieldViolation(
        "messages[0].content", "must be a string or a list of content parts"
    )


@pytest.mark.parametrize(
    "part",
    [
        "hi",
        3,
        None,
        {"text": "no type"},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
        {"type": "file", "file": {}},
        {"type": ["text"], "text": "hi"},
    ],
)
def test_a_part_the_gateway_does_not_take(part: Any) -> None:
    body = message(content=[{"type": "text", "text": "ok"}, part])
    assert refused(body) == FieldViolation(
        "messages[0].content[1].type", "the gateway takes text and image_url parts"
    )


@pytest.mark.parametrize("text", [None, 3, ["hi"], {"t": "hi"}])
def test_a_text_part_whose_text_is_not_a_string(text: Any) -> None:
    body = message(content=[{"type": "text", "text": text}])
    assert refused(body) == FieldViolation("messages[0].content[0].text", "must be a string")


@pytest.mark.parametrize("image", [None, 3, {"detail": "high"}, {"url": 3}, {"url": None}])
def test_an_image_part_without_a_url_string(image: Any) -> None:
    body = message(content=[{"type": "image_url", "image_url": image}])
    assert refused(body) == FieldViolation(
        "messages[0].content[0].image_url.url", "must be a string"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("data:image/png,iVBORw0KGgo=", "a data URL must be base64: data:image/png;base64,..."),
        ("data:image/png;base64", "a data URL must be base64: data:image/png;base64,..."),
        (
            "data:image/png;charset=utf-8,abc",
            "a data URL must be base64: data:image/png;base64,...",
        ),
        ("data:image/png;base64,not base64!", "not valid base64"),
        ("data:image/png;base64,abc", "not valid base64"),  # bad padding
        ("data:image/png;base64,ññññ", "not valid base64"),  # not ASCII
    ],
)
def test_a_bad_data_url(url: str, why: str) -> None:
    body = message(content=[{"type": "image_url", "image_url": {"url": url}}])
    assert refused(body) == FieldViolation("messages[0].content[0].image_url.url", why)


@pytest.mark.parametrize("role", ["system", "developer", "assistant", "tool"])
def test_images_on_a_turn_that_is_not_the_users(role: str) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = chat(messages=[{"role": role, "content": [{"type": "text", "text": "x"}, image]}])
    assert refused(body) == FieldViolation("messages[0].content", "images are for user messages")


@pytest.mark.parametrize(
    "call",
    [
        "call",
        3,
        None,
        {"id": "c1", "type": "function"},
        {"id": "c1", "function": "get_weather"},
        {"id": "c1", "function": ["get_weather", "{}"]},
    ],
)
def test_a_tool_call_that_is_not_a_function_call(call: Any) -> None:
    body = chat(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [call]}])
    assert refused(body) == FieldViolation(
        "messages[1].tool_calls[0]", "must be a function tool call"
    )


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"function": {"name": "f", "arguments": "{}"}}, "id"),
        ({"id": 7, "function": {"name": "f", "arguments": "{}"}}, "id"),
        ({"id": "c1", "function": {"arguments": "{}"}}, "function.name"),
        ({"id": "c1", "function": {"name": 3, "arguments": "{}"}}, "function.name"),
        (
            {"id": "c1", "function": {"name": "f", "arguments": {"city": "Oslo"}}},
            "function.arguments",
        ),
        ({"id": "c1", "function": {"name": "f", "arguments": None}}, "function.arguments"),
    ],
)
def test_a_tool_call_with_a_field_that_is_not_a_string(call: Any, field: str) -> None:
    body = chat(messages=[USER, {"role": "assistant", "tool_calls": [call]}])
    assert refused(body) == FieldViolation(f"messages[1].tool_calls[0].{field}", "must be a string")


@pytest.mark.parametrize("call_id", [3, ["c1"], {"id": "c1"}, True])
def test_a_tool_call_id_that_is_not_a_string(call_id: Any) -> None:
    body = chat(messages=[USER, {"role": "tool", "content": "sunny", "tool_call_id": call_id}])
    assert refused(body) == FieldViolation("messages[1].tool_call_id", "must be a string")


@pytest.mark.parametrize("tools", ["get_weather", {"type": "function"}, 3, True])
def test_tools_that_are_not_a_list(tools: Any) -> None:
    assert refused(chat(tools=tools)) == FieldViolation("tools", "must be a list")


@pytest.mark.parametrize(
    "tool",
    [
        "get_weather",
        None,
        {"type": "function"},
        {"type": "function", "function": "get_weather"},
        {"type": "custom", "function": WEATHER["function"]},
        {"function": WEATHER["function"]},
    ],
)
def test_a_tool_that_is_not_a_function(tool: Any) -> None:
    assert refused(chat(tools=[WEATHER, tool])) == FieldViolation(
        "tools[1]", "must be {type: function, function: {...}}"
    )


@pytest.mark.parametrize("parameters", ["{}", ["type", "object"], 3, True])
def test_tool_parameters_that_are_not_an_object(parameters: Any) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    assert refused(chat(tools=[tool])) == FieldViolation(
        "tools[0].function.parameters", "must be a JSON Schema object"
    )


@pytest.mark.parametrize(
    ("function", "violation"),
    [
        ({}, FieldViolation("tools[0].function.name", "must be a string")),
        ({"name": 3}, FieldViolation("tools[0].function.name", "must be a string")),
        ({"name": "f", "description": 3}, FieldViolation("tools[0].function", "must be a string")),
        (
            {"name": "f", "description": None},
            FieldViolation("tools[0].function", "must be a string"),
        ),
    ],
)
def test_a_tool_whose_name_or_description_is_not_a_string(
    function: dict[str, Any], violation: FieldViolation
) -> None:
    assert refused(chat(tools=[{"type": "function", "function": function}])) == violation


@pytest.mark.parametrize(
    "choice",
    [
        "any",
        "",
        "function",
        3,
        True,
        ["auto"],
        {"type": "function"},
        {"type": "function", "function": {}},
        {"type": "function", "function": {"name": 3}},
        {"type": "function", "function": "get_weather"},
    ],
)
def test_a_tool_choice_that_is_not_a_mode_or_a_function(choice: Any) -> None:
    assert refused(chat(tools=[WEATHER], tool_choice=choice)) == FieldViolation(
        "tool_choice", 'must be "auto", "none", "required" or a function'
    )


@pytest.mark.parametrize(
    "form", ["json_object", 3, [], {}, {"type": "json"}, {"type": None}, {"type": ["text"]}]
)
def test_a_response_format_of_no_known_type(form: Any) -> None:
    assert refused(chat(response_format=form)) == FieldViolation(
        "response_format.type", "must be text, json_object or json_schema"
    )


@pytest.mark.parametrize("schema", [None, "{}", ["name"], 3])
def test_json_schema_without_its_object(schema: Any) -> None:
    form = (
        {"type": "json_schema"}
        if schema is None
        else {"type": "json_schema", "json_schema": schema}
    )
    assert refused(chat(response_format=form)) == FieldViolation(
        "response_format.json_schema", "required with type json_schema"
    )


@pytest.mark.parametrize(
    ("schema", "violation"),
    [
        ({"name": 3}, FieldViolation("response_format.json_schema.name", "must be a string")),
        ({"name": None}, FieldViolation("response_format.json_schema.name", "must be a string")),
        (
            {"name": "a", "description": ["d"]},
            FieldViolation("response_format.json_schema", "must be a string"),
        ),
    ],
)
def test_json_schema_name_or_description_not_a_string(
    schema: dict[str, Any], violation: FieldViolation
) -> None:
    form = {"type": "json_schema", "json_schema": schema}
    assert refused(chat(response_format=form)) == violation


# --- chat request: what is taken -----------------------------------------------------------------


def test_a_plain_body_becomes_build_request_arguments() -> None:
    arguments, stream, usage = chat_arguments(chat())
    assert (stream, usage) == (False, False)
    assert arguments == {
        "model": "default",
        "messages": [(Role.USER, "hi", [], [], "")],
        "prompt": "",
        "max_tokens": None,
        "temperature": None,
        "top_p": None,
        "stop": [],
        "user": "",
        "metadata": {},
        "tools": [],
        "tool_choice": None,
        "parallel_tool_calls": None,
        "response_format": None,
        "seed": None,
        "presence_penalty": None,
        "frequency_penalty": None,
        "vendor_options": None,
    }
    request = build_request(**arguments)
    assert request.messages == (Message(Role.USER, "hi"),) and request.model == "default"


def test_every_field_is_taken() -> None:
    body = chat(
        model="gpt-x",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "system", "content": "and kind"},
            {"role": "user", "content": "weather?", "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {"id": "c2", "function": {"name": "get_weather"}},  # arguments default ""
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        max_tokens=10,
        temperature=0.5,
        top_p=1,
        stop="END",
        user="u-1",
        seed=42,
        presence_penalty=-1,
        frequency_penalty=0.25,
        metadata={"tenant": "a"},
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments, stream, usage = chat_arguments(body)
    assert (stream, usage) == (True, True)
    assert arguments["model"] == "gpt-x"
    assert [m.role for m in arguments["messages"]] == [
        Role.SYSTEM,
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
    ]
    assert arguments["messages"][3].tool_calls == [
        ToolCall("c1", "get_weather", '{"city":"Oslo"}'),
        ToolCall("c2", "get_weather", ""),
    ]
    assert arguments["messages"][3].content == ""
    assert arguments["messages"][4][1:] == ("sunny", [], [], "c1")
    assert arguments["max_tokens"] == 10 and isinstance(arguments["max_tokens"], int)
    assert arguments["temperature"] == 0.5 and isinstance(arguments["top_p"], float)
    assert arguments["stop"] == ["END"]
    assert (arguments["user"], arguments["seed"]) == ("u-1", 42)
    assert (arguments["presence_penalty"], arguments["frequency_penalty"]) == (-1.0, 0.25)
    assert arguments["metadata"] == {"tenant": "a"}
    assert arguments["tools"] == [
        Tool(
            "get_weather",
            "The weather in a city",
            Json({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict=True,
        )
    ]
    assert arguments["tool_choice"] == ToolChoice(ToolMode.FUNCTION, "get_weather")
    assert arguments["parallel_tool_calls"] is False
    assert arguments["response_format"] == ResponseFormat(FormatType.JSON_OBJECT)
    assert arguments["vendor_options"] is None  # every key above is one the gateway reads
    build_request(**arguments)  # and validation takes it


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat_arguments(chat(max_completion_tokens=5, max_tokens=9))[0]["max_tokens"] == 5
    assert chat_arguments(chat(max_completion_tokens=None, max_tokens=9))[0]["max_tokens"] == 9


def test_unknown_keys_go_upstream_as_openai_vendor_options() -> None:
    extra = {"reasoning_effort": "low", "logit_bias": {"50256": -100}, "service_tier": None}
    arguments, _, _ = chat_arguments(chat(**extra))
    # chat() drops keys given None; what is left is sent as is
    assert arguments["vendor_options"] == {
        "openai": Json({"reasoning_effort": "low", "logit_bias": {"50256": -100}})
    }


@pytest.mark.parametrize(
    ("stop", "stops"), [("x", ["x"]), (["a", "b"], ["a", "b"]), ([], []), (None, []), ("", [""])]
)
def test_stop_as_a_string_or_a_list(stop: Any, stops: list[str]) -> None:
    body = chat()
    body["stop"] = stop
    assert chat_arguments(body)[0]["stop"] == stops


@pytest.mark.parametrize("parallel", ["yes", 1, None])
def test_parallel_tool_calls_that_is_not_a_boolean_is_left_to_the_upstream(parallel: Any) -> None:
    body = chat()
    body["parallel_tool_calls"] = parallel
    assert chat_arguments(body)[0]["parallel_tool_calls"] is None


@pytest.mark.parametrize(
    ("stream", "options", "expected"),
    [
        (True, {"include_usage": True}, (True, True)),
        (True, {"include_usage": "yes"}, (True, False)),
        (True, None, (True, False)),
        ("true", {"include_usage": True}, (False, True)),
        (1, None, (False, False)),
    ],
)
def test_stream_and_include_usage_are_true_only_when_true(
    stream: Any, options: Any, expected: tuple[bool, bool]
) -> None:
    body = chat(stream=stream)
    body["stream_options"] = options
    assert chat_arguments(body)[1:] == expected


def test_an_unknown_role_is_left_to_validation_to_name() -> None:
    arguments, _, _ = chat_arguments(chat(messages=[{"role": "function", "content": "x"}]))
    assert arguments["messages"][0].role is None
    with pytest.raises(InvalidRequest) as caught:
        build_request(**arguments)
    assert caught.value.violations[0].field == "messages[0].role"


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_a_role_that_is_not_a_string_is_refused_not_a_crash(role: Any) -> None:
    try:
        arguments, _, _ = chat_arguments(chat(messages=[{"role": role, "content": "x"}]))
    except BodyError:
        return
    assert arguments["messages"][0].role is None


@pytest.mark.parametrize("calls", [5, True, 1.5])
def test_tool_calls_that_are_not_a_list_are_refused_not_a_crash(calls: Any) -> None:
    body = chat(messages=[USER, {"role": "assistant", "content": "x", "tool_calls": calls}])
    with pytest.raises(BodyError):
        chat_arguments(body)


def test_content_parts_of_a_user_turn_keep_their_order_and_images() -> None:
    data = base64.b64encode(PNG).decode()
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": f"data:image/jpeg;base64,{data}"},  # the URL alone
        {"type": "image_url", "image_url": {"url": f"data:image/png;charset=x;base64,{data}"}},
    ]
    [turn] = chat_arguments(message(content=content))[0]["messages"]
    assert turn.content == ""
    assert turn.parts == [
        "look",
        Image(url="https://example.com/a.png"),
        Image(data=PNG, mime_type="image/jpeg"),
        Image(data=PNG, mime_type="image/png"),
    ]


@pytest.mark.parametrize("role", ["system", "developer", "assistant", "tool"])
def test_text_parts_on_other_turns_are_just_their_text(role: str) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    [turn] = chat_arguments(chat(messages=[{"role": role, "content": parts}]))[0]["messages"]
    assert (turn.content, turn.parts) == ("ab", [])


@pytest.mark.parametrize("content", [None, ""])
def test_no_content_is_empty_text(content: Any) -> None:
    [turn] = chat_arguments(message(content=content))[0]["messages"]
    assert (turn.content, turn.parts) == ("", [])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice(ToolMode.AUTO)),
        ("none", ToolChoice(ToolMode.NONE)),
        ("required", ToolChoice(ToolMode.REQUIRED)),
        ({"type": "function", "function": {"name": "f"}}, ToolChoice(ToolMode.FUNCTION, "f")),
        ({"function": {"name": "f"}}, ToolChoice(ToolMode.FUNCTION, "f")),
    ],
)
def test_tool_choice_modes_and_a_named_function(choice: Any, expected: ToolChoice) -> None:
    assert chat_arguments(chat(tool_choice=choice))[0]["tool_choice"] == expected


def test_a_tool_with_no_parameters_or_description() -> None:
    tools = chat_arguments(chat(tools=[{"type": "function", "function": {"name": "now"}}]))[0]
    assert tools["tools"] == [Tool("now", "", None, strict=False)]


@pytest.mark.parametrize("tools", [[], None, 0, ""])
def test_no_tools(tools: Any) -> None:
    body = chat()
    body["tools"] = tools
    assert chat_arguments(body)[0]["tools"] == []


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"type": "text"}, ResponseFormat(FormatType.TEXT)),
        ({"type": "json_object"}, ResponseFormat(FormatType.JSON_OBJECT)),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "description": "the answer",
                    "schema": {"type": "object"},
                    "strict": True,
                },
            },
            ResponseFormat(
                FormatType.JSON_SCHEMA, "answer", "the answer", Json({"type": "object"}), True
            ),
        ),
        (  # a schema that is not an object is left out; validation says it is required
            {"type": "json_schema", "json_schema": {"name": "a", "schema": "object"}},
            ResponseFormat(FormatType.JSON_SCHEMA, "a", "", None, False),
        ),
    ],
)
def test_response_formats(form: dict[str, Any], expected: ResponseFormat) -> None:
    assert chat_arguments(chat(response_format=form))[0]["response_format"] == expected


# --- embeddings request ------------------------------------------------------------------------


@pytest.mark.parametrize("given", [None, 3, [1, 2, 3], [[1, 2]], ["ok", 3], {"text": "x"}, [None]])
def test_embedding_input_that_is_not_text(given: Any) -> None:
    body = {"model": "e", "input": given} if given is not None else {"model": "e"}
    assert refused(body, embed=True) == FieldViolation(
        "input", "must be a string or a list of strings (token arrays are not taken)"
    )


@pytest.mark.parametrize("encoding", ["int8", "FLOAT", 3, ["float"]])
def test_an_encoding_that_is_not_float_or_base64(encoding: Any) -> None:
    body = {"input": "x", "encoding_format": encoding}
    assert refused(body, embed=True) == FieldViolation("encoding_format", "must be float or base64")


@pytest.mark.parametrize(
    ("field", "value", "violation"),
    [
        ("model", 3, FieldViolation("model", "must be a string")),
        ("user", ["u"], FieldViolation("user", "must be a string")),
        ("dimensions", 8.0, FieldViolation("dimensions", "must be an integer")),
        ("dimensions", "8", FieldViolation("dimensions", "must be an integer")),
        ("dimensions", True, FieldViolation("dimensions", "must be an integer")),
    ],
)
def test_embedding_fields_of_the_wrong_type(
    field: str, value: Any, violation: FieldViolation
) -> None:
    assert refused({"input": "x", field: value}, embed=True) == violation


def test_an_embeddings_body_becomes_build_embedding_request_arguments() -> None:
    assert embed_arguments({"model": "e", "input": "one"}) == (
        {"model": "e", "inputs": ["one"], "dimensions": None, "user": "", "metadata": {}},
        "float",
    )
    body = {
        "model": "e",
        "input": ["a", "b"],
        "dimensions": 8,
        "user": "u",
        "encoding_format": "base64",
    }
    assert embed_arguments(body) == (
        {"model": "e", "inputs": ["a", "b"], "dimensions": 8, "user": "u", "metadata": {}},
        "base64",
    )
    assert embed_arguments({"input": [], "encoding_format": None}) == (
        {"model": "", "inputs": [], "dimensions": None, "user": "", "metadata": {}},
        "float",
    )


# --- answers -----------------------------------------------------------------------------------

REQUEST = CompletionRequest(
    model="default", messages=(Message(Role.USER, "hi"),), request_id="req-1"
)
ROUTE = Route("local", "local", 1)
USAGE = Usage(prompt_tokens=3, completion_tokens=5, cached_prompt_tokens=1, reasoning_tokens=2)
USAGE_BODY = {
    "prompt_tokens": 3,
    "completion_tokens": 5,
    "total_tokens": 8,
    "prompt_tokens_details": {"cached_tokens": 1},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def test_a_text_completion_is_a_chat_completion() -> None:
    completion = Completion("hello", FinishReason.LENGTH, USAGE, upstream_model="up-1")
    body = completion_body(completion, ROUTE, REQUEST, created=1700000000)
    assert body == {
        "id": "chatcmpl-req-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "default",  # the logical model asked for, not the upstream's
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello", "refusal": None},
                "finish_reason": "length",
                "logprobs": None,
            }
        ],
        "usage": USAGE_BODY,
        "system_fingerprint": None,
    }
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "hello"
    assert parsed.usage is not None and parsed.usage.total_tokens == 8


def test_a_tool_call_completion_has_no_content_and_the_calls() -> None:
    calls = (ToolCall("c1", "get_weather", '{"city":"Oslo"}'), ToolCall("c2", "now", ""))
    completion = Completion("", FinishReason.TOOL_CALLS, tool_calls=calls, reasoning="thought")
    body = completion_body(completion, ROUTE, REQUEST)
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
        "reasoning_content": "thought",
    }
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert isinstance(body["created"], int) and body["created"] > 0
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.tool_calls is not None
    assert [c.function.name for c in parsed.choices[0].message.tool_calls] == ["get_weather", "now"]


def test_text_with_tool_calls_keeps_the_text() -> None:
    completion = Completion(
        "let me see", FinishReason.TOOL_CALLS, tool_calls=(ToolCall("c", "f", "{}"),)
    )
    assert (
        completion_body(completion, ROUTE, REQUEST)["choices"][0]["message"]["content"]
        == "let me see"
    )


@pytest.mark.parametrize(
    ("finish", "word"),
    [
        (FinishReason.STOP, "stop"),
        (FinishReason.LENGTH, "length"),
        (FinishReason.CONTENT_FILTER, "content_filter"),
        (FinishReason.TOOL_CALLS, "tool_calls"),
        (FinishReason.UNSPECIFIED, "stop"),  # OpenAI's finish_reason is never null at the end
    ],
)
def test_every_finish_reason(finish: FinishReason, word: str) -> None:
    body = completion_body(Completion("x", finish), ROUTE, REQUEST)
    assert body["choices"][0]["finish_reason"] == word
    ChatCompletion.model_validate(body)
    assert (
        ChunkWriter(REQUEST, False).end(finish, Usage())[-1]["choices"][0]["finish_reason"] == word
    )


def chunks_valid(pieces: list[dict[str, Any]]) -> list[ChatCompletionChunk]:
    head = {"id", "object", "created", "model", "system_fingerprint", "choices"}
    for piece in pieces:
        assert set(piece) in (head, head | {"usage"}), piece
        assert piece["object"] == "chat.completion.chunk" and piece["id"] == "chatcmpl-req-1"
        assert piece["model"] == "default"
        for choice in piece["choices"]:
            assert set(choice) == {"index", "delta", "finish_reason", "logprobs"}
    return [ChatCompletionChunk.model_validate(p) for p in pieces]


def test_a_stream_is_a_role_chunk_then_pieces_then_the_finish_and_usage() -> None:
    writer = ChunkWriter(REQUEST, include_usage=True)
    pieces = writer.pieces(Chunk(delta="Hel"))
    pieces += writer.pieces(Chunk(delta="lo", reasoning="hmm"))
    pieces += writer.pieces(Chunk())  # nothing to say: no chunk
    pieces += writer.end(FinishReason.STOP, USAGE)
    parsed = chunks_valid(pieces)
    assert [p["choices"][0]["delta"] if p["choices"] else None for p in pieces] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo", "reasoning_content": "hmm"},
        {},
        None,
    ]
    assert [c.choices[0].finish_reason if c.choices else "-" for c in parsed] == [
        None,
        None,
        None,
        "stop",
        "-",
    ]
    assert pieces[-1]["choices"] == [] and pieces[-1]["usage"] == USAGE_BODY
    assert len({p["created"] for p in pieces}) == 1


def test_a_stream_without_include_usage_ends_with_the_finish_chunk() -> None:
    writer = ChunkWriter(REQUEST, include_usage=False)
    pieces = writer.pieces(Chunk(delta="hi")) + writer.end(FinishReason.LENGTH, USAGE)
    chunks_valid(pieces)
    assert len(pieces) == 3 and "usage" not in pieces[-1]
    assert pieces[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "length",
        "logprobs": None,
    }


def test_an_empty_stream_still_has_its_role_chunk_and_finish() -> None:
    pieces = ChunkWriter(REQUEST, include_usage=True).end(FinishReason.STOP, Usage())
    chunks_valid(pieces)
    assert [p["choices"][0]["delta"] if p["choices"] else None for p in pieces] == [
        {"role": "assistant", "content": ""},
        {},
        None,
    ]
    assert pieces[-1]["usage"]["total_tokens"] == 0


def test_streamed_tool_calls_have_id_and_name_on_their_first_piece_only() -> None:
    writer = ChunkWriter(REQUEST, include_usage=False)
    pieces = writer.pieces(Chunk(tool_calls=(ToolCallDelta(0, id="c1", name="get_weather"),)))
    pieces += writer.pieces(Chunk(tool_calls=(ToolCallDelta(0, arguments='{"city":'),)))
    pieces += writer.pieces(
        Chunk(
            tool_calls=(
                ToolCallDelta(0, arguments='"Oslo"}'),
                ToolCallDelta(1, id="c2", name="now"),
            )
        )
    )
    pieces += writer.end(FinishReason.TOOL_CALLS, Usage())
    parsed = chunks_valid(pieces)
    assert [p["choices"][0]["delta"].get("tool_calls") for p in pieces[1:4]] == [
        [
            {
                "index": 0,
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"city":'}}],
        [
            {"index": 0, "function": {"arguments": '"Oslo"}'}},
            {
                "index": 1,
                "id": "c2",
                "type": "function",
                "function": {"name": "now", "arguments": ""},
            },
        ],
    ]
    assert parsed[-1].choices[0].finish_reason == "tool_calls"


VECTORS = Embeddings(vectors=((0.5, -0.25, 1.0), (0.0, 0.125, -2.0)), usage=Usage(prompt_tokens=4))


def test_embeddings_as_floats() -> None:
    body = embeddings_body(VECTORS, "embed-model", "float")
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 0.125, -2.0]},
        ],
        "model": "embed-model",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    parsed = CreateEmbeddingResponse.model_validate(body)
    assert [d.embedding for d in parsed.data] == [list(v) for v in VECTORS.vectors]


def test_embeddings_as_base64_are_little_endian_float32() -> None:
    body = embeddings_body(VECTORS, "embed-model", "base64")
    for item, vector in zip(body["data"], VECTORS.vectors, strict=True):
        raw = base64.b64decode(item["embedding"], validate=True)
        assert struct.unpack(f"<{len(raw) // 4}f", raw) == vector  # exact in float32
    decoded = {  # what the SDK does with base64 before it validates
        **body,
        "data": [
            {**d, "embedding": list(struct.unpack("<3f", base64.b64decode(d["embedding"])))}
            for d in body["data"]
        ],
    }
    CreateEmbeddingResponse.model_validate(decoded)


def test_no_vectors_is_an_empty_list() -> None:
    body = embeddings_body(Embeddings(vectors=()), "e", "float")
    assert body["data"] == [] and body["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    CreateEmbeddingResponse.model_validate(body)


def test_the_model_list() -> None:
    body = models_body(["default", "gpt-x"])
    assert body == {
        "object": "list",
        "data": [
            {"id": "default", "object": "model", "created": 0, "owned_by": "hapax"},
            {"id": "gpt-x", "object": "model", "created": 0, "owned_by": "hapax"},
        ],
    }
    assert [Model.model_validate(m).id for m in body["data"]] == ["default", "gpt-x"]
    assert models_body([]) == {"object": "list", "data": []}


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (
            InvalidRequest([FieldViolation("temperature", "bad")]),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (ModelNotFound("nope", ["default"]), 404, "not_found_error", "model_not_found"),
        (CapabilityMissing("m", "image_urls"), 400, "invalid_request_error", "capability_missing"),
        (ApiKeyMissing(), 401, "authentication_error", "api_key_missing"),
        (RateLimited("search", "tokens_per_minute", 2.5), 429, "rate_limit_error", "rate_limited"),
        (Overloaded(10, 1.0), 503, "server_error", "overloaded"),
        (DeadlineExceeded([]), 504, "timeout_error", "deadline_exceeded"),
        (ZeroDivisionError("secret"), 500, "server_error", "internal"),
    ],
)
def test_an_error_view_becomes_openais_error_body_and_status(
    error: BaseException, status: int, kind: str, code: str
) -> None:
    view = view_of(error, "r-1")
    got_status, body = error_body(view)
    assert got_status == status
    assert body["error"]["type"] == kind and body["error"]["code"] == code
    assert body["error"]["message"] == view.message and "secret" not in view.message
    assert body["error"]["param"] == ("temperature" if code == "invalid_request" else None)
    retry = retry_after_header(view)
    if code in ("rate_limited", "overloaded"):
        assert retry == {"Retry-After": "3" if code == "rate_limited" else "1"}
    else:
        assert retry == {}
