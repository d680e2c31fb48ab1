"""The built-in local provider (what `make run` serves with no keys) answers tool and structured
output requests deterministically, unary and streamed alike, and says it is local."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, struct_pb2

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.providers.local import PREFIX
from tests.conftest import Gateway

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "alerts": {"type": "boolean"},
    },
    "required": ["city"],
}
ASK = pb.Message(role=pb.ROLE_USER, content="Weather in Oslo?")


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


def tool(name: str, schema: dict[str, Any]) -> pb.Tool:
    return pb.Tool(function=pb.FunctionDeclaration(name=name, parameters=struct(schema)))


async def streamed(gateway: Gateway, **fields: Any) -> tuple[str, list[list[str]], Any]:
    text, calls = "", {}
    messages = [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(**fields))]
    for m in messages:
        text += m.delta
        for d in m.tool_calls:
            got = calls.setdefault(d.index, ["", "", ""])
            got[0], got[1], got[2] = got[0] + d.id, got[1] + d.name, got[2] + d.arguments
    return text, [calls[i] for i in sorted(calls)], messages[-1]


async def test_it_calls_the_tool_with_arguments_made_from_its_schema(gateway: Gateway) -> None:
    fields = {"messages": [ASK], "tools": [tool("get_weather", WEATHER), tool("other", {})]}

    first = await gateway.stub.Complete(pb.CompleteRequest(**fields))
    again = await gateway.stub.Complete(pb.CompleteRequest(**fields))
    text, calls, last = await streamed(gateway, **fields)

    [made] = first.tool_calls
    assert (made.id, made.name) == ("call_local_0", "get_weather")
    assert json.loads(made.arguments) == {
        "city": f"{PREFIX} Weather in Oslo?",
        "days": 1,
        "unit": "celsius",
        "alerts": False,
    }
    assert first.finish_reason == pb.FINISH_REASON_TOOL_CALLS and first.text == ""
    assert again.tool_calls == first.tool_calls  # deterministic
    assert calls == [[made.id, made.name, made.arguments]] and text == ""
    assert last.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_it_calls_the_named_tool_and_none_means_text(gateway: Gateway) -> None:
    tools = [tool("get_weather", WEATHER), tool("get_time", {"type": "object"})]
    named = await gateway.stub.Complete(
        pb.CompleteRequest(
            messages=[ASK], tools=tools, tool_choice=pb.ToolChoice(function="get_time")
        )
    )
    none = await gateway.stub.Complete(
        pb.CompleteRequest(
            messages=[ASK], tools=tools, tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
        )
    )
    assert [(c.name, c.arguments) for c in named.tool_calls] == [("get_time", "{}")]
    assert not none.tool_calls and none.text == f"{PREFIX} You said: Weather in Oslo?"


async def test_after_a_tool_result_it_answers_quoting_it(gateway: Gateway) -> None:
    made = pb.ToolCall(id="call_local_0", name="get_weather", arguments='{"city": "Oslo"}')
    messages = [
        ASK,
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[made]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_local_0", content="-3C, snow"),
    ]
    fields = {"messages": messages, "tools": [tool("get_weather", WEATHER)]}

    response = await gateway.stub.Complete(pb.CompleteRequest(**fields))
    text, calls, _ = await streamed(gateway, **fields)

    assert response.text == f"{PREFIX} The tool returned: -3C, snow"
    assert response.finish_reason == pb.FINISH_REASON_STOP and not response.tool_calls
    assert (text, calls) == (response.text, [])


async def test_a_json_schema_answer_fits_the_schema_and_says_it_is_local(gateway: Gateway) -> None:
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "celsius": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["summary", "celsius", "tags"],
        "additionalProperties": False,
    }
    form = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=pb.JsonSchema(name="forecast", schema=struct(schema)),
    )

    response = await gateway.stub.Complete(pb.CompleteRequest(messages=[ASK], response_format=form))
    text, _, _ = await streamed(gateway, messages=[ASK], response_format=form)

    said = f"{PREFIX} You said: Weather in Oslo?"
    assert json.loads(response.text) == {"summary": said, "celsius": 0, "tags": [said]}
    assert text == response.text


async def test_a_json_object_answer(gateway: Gateway) -> None:
    form = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    response = await gateway.stub.Complete(pb.CompleteRequest(messages=[ASK], response_format=form))
    assert json.loads(response.text) == {"answer": f"{PREFIX} You said: Weather in Oslo?"}


async def test_it_counts_the_images_it_was_shown(gateway: Gateway) -> None:
    turn = pb.Message(
        role=pb.ROLE_USER,
        parts=[
            pb.Part(text="What is this?"),
            pb.Part(image=pb.Image(data=b"\x89PNG", mime_type="image/png")),
        ],
    )
    response = await gateway.stub.Complete(pb.CompleteRequest(messages=[turn]))
    assert response.text == f"{PREFIX} You said (and showed 1 image): What is this?"
