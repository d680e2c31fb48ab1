"""Request validation names every bad field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hapaxd.core.errors import InvalidRequest
from hapaxd.core.types import (
    FormatType,
    Image,
    Json,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
)
from hapaxd.core.validation import Limits, RawMessage, build_request

BASE: dict[str, Any] = dict(
    model="",
    messages=[RawMessage(Role.USER, "hi")],
    prompt="",
    max_tokens=None,
    temperature=None,
    top_p=None,
    stop=[],
    user="",
    metadata={},
)


SMALL = Limits(
    max_content_chars=100,
    max_messages=3,
    max_tools=2,
    max_schema_bytes=100,
    max_image_bytes=10,
    max_vendor_option_bytes=40,
)
OBJECT = Json({"type": "object", "properties": {"city": {"type": "string"}}})
WEATHER = Tool("get_weather", "the weather in a city", OBJECT)
PNG = Image(data=b"\x89PNG", mime_type="image/png")


def fields(**change: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        build_request(**{**BASE, **change}, limits=SMALL)
    return [v.field for v in caught.value.violations]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"messages": [], "prompt": ""}, ["messages"]),
        ({"messages": [RawMessage(None, "x")]}, ["messages[0].role"]),
        ({"messages": [RawMessage(Role.USER, "")]}, ["messages[0].content"]),
        ({"max_tokens": -1}, ["max_tokens"]),
        ({"max_tokens": 0}, ["max_tokens"]),
        ({"temperature": 2.5}, ["temperature"]),
        ({"temperature": -0.1}, ["temperature"]),
        ({"temperature": math.nan}, ["temperature"]),
        ({"top_p": math.inf}, ["top_p"]),
        ({"messages": [RawMessage(Role.USER, "x" * 101)]}, ["messages"]),
        ({"messages": [], "prompt": "x" * 101}, ["prompt"]),
        ({"messages": [RawMessage(Role.USER, "x")] * 4}, ["messages"]),
        ({"stop": [""]}, ["stop[0]"]),
        ({"model": "m" * 300}, ["model"]),
        ({"max_tokens": -5, "temperature": math.nan}, ["max_tokens", "temperature"]),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], expected: list[str]) -> None:
    assert fields(**change) == expected


def test_zero_temperature_is_a_real_value_and_prompt_becomes_a_user_message() -> None:
    request = build_request(**{**BASE, "messages": [], "prompt": "p", "temperature": 0.0})
    assert request.temperature == 0.0
    assert [(m.role, m.content) for m in request.messages] == [(Role.USER, "p")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tools": [Tool("bad name")]}, ["tools[0].function.name"]),
        ({"tools": [WEATHER, WEATHER]}, ["tools[1].function.name"]),
        ({"tools": [Tool("a"), Tool("b"), Tool("c")]}, ["tools"]),
        (
            {"tools": [Tool("big", parameters=Json({"description": "x" * 100}))]},
            ["tools[0].function.parameters"],
        ),
        (
            {"tools": [WEATHER], "tool_choice": ToolChoice(ToolMode.FUNCTION, "other")},
            ["tool_choice.function"],
        ),
        ({"tool_choice": ToolChoice(ToolMode.REQUIRED)}, ["tool_choice"]),
        (
            {"response_format": ResponseFormat(FormatType.JSON_SCHEMA, name="answer")},
            ["response_format.json_schema.schema"],
        ),
        (
            {"response_format": ResponseFormat(FormatType.JSON_SCHEMA, name="", schema=OBJECT)},
            ["response_format.json_schema.name"],
        ),
        (
            {"response_format": ResponseFormat(FormatType.JSON_OBJECT, schema=OBJECT)},
            ["response_format.json_schema"],
        ),
        ({"presence_penalty": 2.5}, ["presence_penalty"]),
        ({"frequency_penalty": -3.0}, ["frequency_penalty"]),
        ({"messages": [RawMessage(Role.USER, "", parts=[PNG, PNG, PNG])]}, ["messages"]),
        (
            {"messages": [RawMessage(Role.USER, "", parts=[Image(url="http://x/a.png")])]},
            ["messages[0].parts[0].image"],
        ),
        (
            {"messages": [RawMessage(Role.USER, "", parts=[Image(data=b"x", mime_type="a/b")])]},
            ["messages[0].parts[0].image"],
        ),
        *(
            (
                {"messages": [RawMessage(Role.USER, "", parts=[image])]},
                ["messages[0].parts[0].image"],
            )
            for image in (
                Image(url="s3://"),
                Image(url="s3://bucket"),  # no key
                Image(url="s3://bucket/"),
                Image(url="gs://Bucket/a.png"),  # bucket names are lower case
                Image(url="s3://b/a.png"),  # too short a bucket name
                Image(url="ftp://bucket/a.png"),
                Image(url="s3://bucket/a b.png"),
                Image(url="s3://bucket/photo"),  # no mime_type, and the name does not say it
                Image(url="gs://bucket/a.png", mime_type="image/tiff"),
                Image(url="s3://bucket/a.png", data=b"x", mime_type="image/png"),
            )
        ),
        (
            {"messages": [RawMessage(Role.USER, "", parts=[Image()])]},
            ["messages[0].parts[0].image"],
        ),
        ({"messages": [RawMessage(Role.USER, "hi", parts=["x"])]}, ["messages[0].parts"]),
        ({"messages": [RawMessage(Role.ASSISTANT, "", parts=["x"])]}, ["messages[0].parts"]),
        ({"messages": [RawMessage(Role.TOOL, "72F")]}, ["messages[0].tool_call_id"]),
        (
            {"messages": [RawMessage(Role.TOOL, "", tool_call_id="call_1")]},
            ["messages[0].content"],
        ),
        (
            {"messages": [RawMessage(Role.USER, "x", tool_calls=[ToolCall("c", "f", "{}")])]},
            ["messages[0].tool_calls"],
        ),
        (
            {"messages": [RawMessage(Role.ASSISTANT, "", tool_calls=[ToolCall("c", "f", "[1]")])]},
            ["messages[0].tool_calls[0].arguments"],
        ),
        ({"vendor_options": {"sagemaker": Json({"a": 1})}}, ["vendor_options['sagemaker']"]),
        ({"vendor_options": {"openai": Json({"model": "x"})}}, ["vendor_options['openai']"]),
        ({"vendor_options": {"openai": Json({"reasoning": "x" * 50})}}, ["vendor_options"]),
    ],
)
def test_bad_rich_fields_are_named(change: dict[str, Any], expected: list[str]) -> None:
    assert fields(**change) == expected


def test_a_tool_conversation_passes_and_keeps_every_field() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    request = build_request(
        **{
            **BASE,
            "messages": [
                RawMessage(Role.USER, "", parts=["What is this? ", PNG]),
                RawMessage(Role.ASSISTANT, "", tool_calls=[call]),
                RawMessage(Role.TOOL, "-3C", tool_call_id="call_1"),
            ],
            "tools": [WEATHER],
            "tool_choice": ToolChoice(ToolMode.FUNCTION, "get_weather"),
            "vendor_options": {"openai": Json({"reasoning_effort": "low"})},
        },
        limits=SMALL,
    )
    first, second, third = request.messages
    assert first.content == "What is this? " and first.images == (PNG,)
    assert second.tool_calls == (call,) and third.tool_call_id == "call_1"
    assert request.options_for("azure_openai") == {"reasoning_effort": "low"}
    assert request.options_for("anthropic") == {}
    assert {c.value for c in request.needs()} == {"tools", "images"}


def test_two_requests_differing_only_in_their_tools_have_different_shapes() -> None:
    one = build_request(**{**BASE, "tools": [WEATHER]})
    other = build_request(**{**BASE, "tools": [Tool("get_time", "", OBJECT)]})
    same = build_request(
        **{
            **BASE,
            "tools": [
                Tool(
                    "get_weather",
                    "the weather in a city",
                    Json({"properties": {"city": {"type": "string"}}, "type": "object"}),
                )
            ],
        }
    )
    assert one.shape_key() != other.shape_key()
    assert one.shape_key() == same.shape_key()  # key order in a schema does not matter


def test_a_cloud_object_image_gets_its_type_from_its_name_unless_given() -> None:
    """s3:// and gs:// objects: the vendors need a MIME type, which the object's name gives
    when the caller gave none (the HTTP door's image_url has no field for it)."""
    request = build_request(
        **{
            **BASE,
            "messages": [
                RawMessage(
                    Role.USER,
                    "",
                    parts=[
                        "Compare",
                        Image(url="s3://my-bucket/cats/a.JPG"),
                        Image(url="gs://team_images.example.com/b", mime_type="image/webp"),
                        Image(url="gs://bucket/c.gif", mime_type="image/png"),
                        Image(url="https://example.com/d"),
                    ],
                )
            ],
        }
    )
    assert [(i.url, i.mime_type) for i in request.messages[0].images] == [
        ("s3://my-bucket/cats/a.JPG", "image/jpeg"),
        ("gs://team_images.example.com/b", "image/webp"),
        ("gs://bucket/c.gif", "image/png"),  # the caller's type, not the name's
        ("https://example.com/d", ""),  # an https URL's type is the provider's to find
    ]
    assert {c.value for c in request.needs()} == {
        "images",
        "image_urls",
        "image_s3_uris",
        "image_gs_uris",
    }


def test_a_missing_object_type_says_how_to_give_it() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(
            **{
                **BASE,
                "messages": [RawMessage(Role.USER, "", parts=[Image(url="s3://bucket/photo")])],
            }
        )
    [violation] = caught.value.violations
    assert "mime_type" in violation.description and ".jpeg" in violation.description


def test_a_plain_request_needs_nothing() -> None:
    assert build_request(**BASE).needs() == frozenset()


def test_with_model_keeps_every_other_field() -> None:
    """CompletionRequest.with_model spells its fields out (it is on the hot path): a field added
    to the dataclass and not to it fails here."""
    import dataclasses

    from hapaxd.core.types import CompletionRequest

    values = {
        f.name: f"value-{f.name}" for f in dataclasses.fields(CompletionRequest)
    }  # any distinct value per field will do: the constructor does not check types
    request = CompletionRequest(**values)  # type: ignore[arg-type]
    moved = request.with_model("other")
    assert moved.model == "other"
    for field in dataclasses.fields(CompletionRequest):
        if field.name != "model":
            assert getattr(moved, field.name) == values[field.name], field.name
