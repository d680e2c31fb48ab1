"""Property: whatever a caller sends, the gateway answers OK or INVALID_ARGUMENT with details,
never UNKNOWN or INTERNAL; and an OK answer is well formed. A real gateway (local provider, which
has every capability, so nothing it is asked is CAPABILITY_MISSING) runs on its own thread's event
loop; hypothesis drives a synchronous stub against it.

Requests use the whole contract: plain text, and messages with parts (text, images by URL or as
bytes with a MIME type), tool calls and tool results; tools with JSON Schema parameters, tool
choice, response formats (a JSON object, or a Struct schema), vendor options, seed and penalties;
both Complete and StreamComplete. Half of them are plausible conversations, so that OK answers
(tool calls, structured output) are as common as refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc

any_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
names = st.one_of(st.sampled_from(["get_weather", "now", "a-b_c", "answer"]), st.text(max_size=8))
texts = st.text(max_size=30)

# --- JSON values, and JSON Schemas, as a Struct holds them -------------------------------------
# NaN and Infinity too: a Struct may hold them, JSON may not (INVALID_ARGUMENT, never INTERNAL).
numbers = st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(
    st.one_of(st.sampled_from(["type", "model", "reasoning_effort", "messages"]), texts),
    json_values,
    max_size=4,
)
TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]
leaf_schemas = st.one_of(
    st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), max_size=2))},
        optional={
            "enum": st.lists(scalars, max_size=3),
            "const": json_values,
            "default": json_values,
            "minimum": scalars,
            "description": texts,
        },
    ),
    json_objects,
)
schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object")},
            optional={
                "properties": st.one_of(st.dictionaries(names, inner, max_size=3), json_values),
                "required": st.lists(names, max_size=2),
                "additionalProperties": st.booleans(),
            },
        ),
        st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner}),
        st.sampled_from(["anyOf", "oneOf", "allOf"]).flatmap(
            lambda key: st.fixed_dictionaries({key: st.lists(inner, max_size=2)})
        ),
    ),
    max_leaves=6,
)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


structs = schemas.map(struct)

# --- messages ------------------------------------------------------------------------------------
IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"]
urls = st.one_of(
    st.sampled_from(["https://example.com/a.png", "http://example.com/a.png", "", "data:x"]),
    st.text(max_size=20),
    st.just("https://example.com/" + "x" * 9000),
)
images = st.one_of(
    st.builds(pb.Image, url=urls, mime_type=st.sampled_from(["", *IMAGE_TYPES])),
    st.builds(
        pb.Image,
        data=st.binary(max_size=32),
        mime_type=st.one_of(st.sampled_from(IMAGE_TYPES), st.text(max_size=10)),
    ),
)
parts = st.one_of(st.builds(pb.Part, text=texts), st.builds(pb.Part, image=images))
arguments = st.one_of(json_objects.map(json.dumps), st.text(max_size=10), st.just(""))
tool_calls = st.builds(
    pb.ToolCall, id=st.one_of(st.just("call_1"), texts), name=names, arguments=arguments
)
roles = st.integers(-3, 6)  # 0 is unspecified, 1-4 the roles, the rest unknown
any_messages = st.lists(
    st.builds(
        pb.Message,
        role=roles,
        content=texts,
        parts=st.lists(parts, max_size=3),
        tool_calls=st.lists(tool_calls, max_size=2),
        tool_call_id=st.one_of(st.just(""), texts),
    ),
    max_size=5,
)
# Plausible turns: roles and fields as a caller who read the docs would set them.
SYSTEM, USER, ASSISTANT, TOOL = pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL
turns = st.one_of(
    st.builds(pb.Message, role=st.just(USER), content=st.text(min_size=1, max_size=30)),
    st.builds(pb.Message, role=st.just(USER), parts=st.lists(parts, min_size=1, max_size=3)),
    st.builds(pb.Message, role=st.just(SYSTEM), content=st.text(min_size=1, max_size=30)),
    st.builds(pb.Message, role=st.just(ASSISTANT), content=st.text(min_size=1, max_size=30)),
    st.builds(
        pb.Message,
        role=st.just(ASSISTANT),
        tool_calls=st.lists(
            st.builds(pb.ToolCall, id=st.just("call_1"), name=names, arguments=arguments),
            min_size=1,
            max_size=2,
        ),
    ),
    st.builds(
        pb.Message,
        role=st.just(TOOL),
        tool_call_id=st.just("call_1"),
        content=st.text(min_size=1, max_size=30),
    ),
)
plausible_messages = st.lists(turns, min_size=1, max_size=4)

# --- tools, tool choice, response format, vendor options ------------------------------------------
tools = st.builds(
    pb.Tool,
    function=st.builds(
        pb.FunctionDeclaration,
        name=names,
        description=texts,
        parameters=st.one_of(st.none(), structs),
        strict=st.booleans(),
    ),
)
tool_choices = st.one_of(
    st.builds(pb.ToolChoice, mode=st.integers(-1, 5)),
    st.builds(pb.ToolChoice, function=names),
)
response_formats = st.one_of(
    st.builds(pb.ResponseFormat, type=st.integers(-1, 5)),
    st.builds(
        pb.ResponseFormat,
        type=st.sampled_from(
            [pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT]
        ),
        json_schema=st.builds(
            pb.JsonSchema,
            name=names,
            description=texts,
            schema=st.one_of(st.none(), structs),
            strict=st.booleans(),
        ),
    ),
)
vendor_options = st.dictionaries(
    st.one_of(st.sampled_from(["openai", "anthropic", "ollama"]), st.text(max_size=6)),
    json_objects.map(struct),
    max_size=2,
)

any_requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["", "default", "any-model", "x" * 300]),
        "messages": st.one_of(any_messages, plausible_messages),
        "prompt": st.text(max_size=40),
        "stop": st.one_of(st.just([]), st.lists(st.text(max_size=5), max_size=20)),
        "user": st.text(max_size=10),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    },
    optional={
        "max_tokens": st.integers(-(2**31), 2**31 - 1),
        "temperature": any_floats,
        "top_p": any_floats,
        "tools": st.lists(tools, max_size=3),
        "tool_choice": tool_choices,
        "parallel_tool_calls": st.booleans(),
        "response_format": response_formats,
        "seed": st.integers(-(2**63), 2**63 - 1),
        "presence_penalty": any_floats,
        "frequency_penalty": any_floats,
        "vendor_options": vendor_options,
    },
)
VALID_NAMES = ["get_weather", "now", "a-b_c", "answer"]


@st.composite
def plausible_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request as a caller who read the docs would make it: mostly answered."""
    fields: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"model": st.sampled_from(["default", "any-model"]), "messages": plausible_messages},
            optional={
                "max_tokens": st.integers(1, 40),
                "temperature": st.floats(0, 2),
                "top_p": st.floats(0, 1),
                "stop": st.lists(st.text(min_size=1, max_size=3), max_size=2),
                "seed": st.integers(-(2**63), 2**63 - 1),
                "presence_penalty": st.floats(-2, 2),
                "frequency_penalty": st.floats(-2, 2),
                "parallel_tool_calls": st.booleans(),
                "vendor_options": st.dictionaries(
                    st.sampled_from(["openai", "anthropic", "ollama"]),
                    st.dictionaries(
                        st.sampled_from(["reasoning_effort", "top_k", "keep_alive"]), json_values
                    ).map(struct),
                    max_size=2,
                ),
            },
        )
    )
    fields.setdefault("stop", [])
    declared = draw(st.lists(st.sampled_from(VALID_NAMES), max_size=3, unique=True))
    if declared:
        fields["tools"] = [
            pb.Tool(
                function=pb.FunctionDeclaration(
                    name=name,
                    description=draw(texts),
                    parameters=draw(st.one_of(st.none(), structs)),
                    strict=draw(st.booleans()),
                )
            )
            for name in declared
        ]
        choice = draw(
            st.one_of(
                st.none(),
                st.builds(pb.ToolChoice, mode=st.integers(1, 3)),
                st.builds(pb.ToolChoice, function=st.sampled_from(declared)),
            )
        )
        if choice is not None:
            fields["tool_choice"] = choice
    form = draw(
        st.one_of(
            st.none(),
            st.builds(
                pb.ResponseFormat,
                type=st.sampled_from(
                    [pb.RESPONSE_FORMAT_TYPE_TEXT, pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT]
                ),
            ),
            st.builds(
                pb.ResponseFormat,
                type=st.just(pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
                json_schema=st.builds(
                    pb.JsonSchema, name=st.sampled_from(VALID_NAMES), schema=structs
                ),
            ),
        )
    )
    if form is not None:
        fields["response_format"] = form
    return fields


requests = st.one_of(any_requests, plausible_requests())

FINISHED = {
    pb.FINISH_REASON_STOP,
    pb.FINISH_REASON_LENGTH,
    pb.FINISH_REASON_CONTENT_FILTER,
    pb.FINISH_REASON_TOOL_CALLS,
}


def refused_as_a_client_error(error: grpc.RpcError) -> None:
    code = error.code()  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, error.details())  # type: ignore[attr-defined]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.details


def well_formed(
    fields: dict[str, Any], text: str, calls: list[pb.ToolCall], finish: int, usage: pb.Usage
) -> None:
    assert finish in FINISHED
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    declared = {t.function.name for t in fields.get("tools", ())}
    if calls:
        assert finish == pb.FINISH_REASON_TOOL_CALLS and not text
        for call in calls:
            assert call.id and call.name in declared
            assert isinstance(json.loads(call.arguments), dict)
        return
    form = fields.get("response_format")
    asked_json = form is not None and form.type in (
        pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
        pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
    )
    if asked_json and finish == pb.FINISH_REASON_STOP and not fields["stop"]:
        answer = json.loads(text)  # a whole answer in JSON when it was asked for
        if form.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
            assert isinstance(answer, dict)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=requests, stream=st.booleans())
def test_any_request_is_ok_or_invalid_argument(
    stub: pb_grpc.CompletionServiceStub, fields: dict[str, Any], stream: bool
) -> None:
    try:
        if stream:
            replies = list(stub.StreamComplete(pb.StreamCompleteRequest(**fields), timeout=10))
            assert replies and len({r.id for r in replies}) == 1
            last = replies[-1]
            assert all(r.finish_reason == pb.FINISH_REASON_UNSPECIFIED for r in replies[:-1])
            assert last.route.provider == "local"
            calls: dict[int, pb.ToolCall] = {}
            for reply in replies:
                for delta in reply.tool_calls:
                    call = calls.setdefault(delta.index, pb.ToolCall())
                    call.id += delta.id
                    call.name += delta.name
                    call.arguments += delta.arguments
            text = "".join(r.delta for r in replies)
            well_formed(fields, text, list(calls.values()), last.finish_reason, last.usage)
        else:
            reply = stub.Complete(pb.CompleteRequest(**fields), timeout=10)
            assert reply.route.provider == "local" and reply.id
            well_formed(
                fields, reply.text, list(reply.tool_calls), reply.finish_reason, reply.usage
            )
    except grpc.RpcError as error:
        event("refused")
        refused_as_a_client_error(error)
    else:
        event("answered")


def test_a_plausible_request_of_each_kind_is_answered(stub: pb_grpc.CompletionServiceStub) -> None:
    """The generators above can make OK answers of each kind (not only refusals)."""
    weather = pb.Tool(
        function=pb.FunctionDeclaration(
            name="get_weather",
            parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
    )
    png = pb.Part(image=pb.Image(data=b"\x89PNG", mime_type="image/png"))
    user = pb.Message(role=USER, parts=[pb.Part(text="look"), png])
    reply = stub.Complete(pb.CompleteRequest(messages=[user], tools=[weather]), timeout=10)
    assert reply.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert json.loads(reply.tool_calls[0].arguments).keys() == {"city"}
    form = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=pb.JsonSchema(name="answer", schema=struct({"type": "object"})),
    )
    reply = stub.Complete(pb.CompleteRequest(prompt="hi", response_format=form), timeout=10)
    assert json.loads(reply.text) == {}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["parameters", "schema", "vendor_options"])
def test_a_struct_holding_nan_or_infinity_is_invalid_argument(
    stub: pb_grpc.CompletionServiceStub, where: str, number: float
) -> None:
    """A Struct number JSON cannot hold (NaN, ±Infinity) is the caller's mistake."""
    bad = struct({"type": "object", "default": number})
    fields: dict[str, Any] = {"prompt": "hi"}
    if where == "parameters":
        fields["tools"] = [pb.Tool(function=pb.FunctionDeclaration(name="f", parameters=bad))]
    elif where == "schema":
        fields["response_format"] = pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(name="a", schema=bad),
        )
    else:
        fields["vendor_options"] = {"openai": struct({"reasoning": {"x": number}})}
    try:
        stub.Complete(pb.CompleteRequest(**fields), timeout=10)
    except grpc.RpcError as error:
        refused_as_a_client_error(error)
    else:
        raise AssertionError("a Struct holding NaN or Infinity was answered")
