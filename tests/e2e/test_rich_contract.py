"""Tools, tool results, images, structured output, reasoning and the extra settings, end to end:
a real gRPC channel to the gateway, one provider of each vendor type in front of the fake
upstream speaking that vendor's wire format, unary and streaming. The fake refuses any body its
vendor's SDK types refuse (tests/fakes/upstream/shapes.py), and each test also checks the parts
of the body that carry the feature."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import Call, FakeUpstream, Reply
from tests.support.status_details import details_of


@dataclasses.dataclass(frozen=True)
class Vendor:
    type: str  # provider type
    wire: str  # the fake's vendor name
    route: str  # the fake's chat route


VENDORS = {
    "openai": Vendor("openai", "openai", "openai.chat"),
    "azure_openai": Vendor("azure_openai", "azure", "azure.chat"),
    "anthropic": Vendor("anthropic", "anthropic", "anthropic.messages"),
    "ollama": Vendor("ollama", "ollama", "ollama.chat"),
}
ALL = pytest.mark.parametrize("vendor", list(VENDORS))
BOTH = pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}
WEATHER = pb.Tool(
    function=pb.FunctionDeclaration(
        name="get_weather",
        description="The weather in a city",
        parameters=json_format.ParseDict(WEATHER_SCHEMA, struct_pb2.Struct()),
    )
)
PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
ASK = pb.Message(role=pb.ROLE_USER, content="What is the weather in Oslo?")


def provider(vendor: str, fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    v = VENDORS[vendor]
    return {
        "name": vendor.replace("_", "-"),
        "type": v.type,
        "base_url": fake.base_url(v.wire),
        "models": {"chat": "up-model"},
        **extra,
    }


async def gateway_for(start: StartGateway, *providers: dict[str, Any]) -> Any:
    return await start(
        make_settings(
            providers=list(providers),
            default_model="chat",
            router={"retry": {"max_attempts": 1}},
        )
    )


@dataclasses.dataclass
class Answer:
    """A Complete response, or a StreamComplete read to its end, in one shape."""

    text: str
    reasoning: str
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish: int
    usage: pb.Usage
    route: pb.Route
    messages: int = 1  # stream messages read


async def call(gateway: Any, stream: bool, **fields: Any) -> Answer:
    if not stream:
        r = await gateway.stub.Complete(pb.CompleteRequest(**fields))
        calls = [(c.id, c.name, c.arguments) for c in r.tool_calls]
        return Answer(r.text, r.reasoning, calls, r.finish_reason, r.usage, r.route)
    text, reasoning, parts = "", "", {}
    messages = [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(**fields))]
    for m in messages:
        text += m.delta
        reasoning += m.reasoning_delta
        for d in m.tool_calls:
            got = parts.setdefault(d.index, ["", "", ""])
            got[0] += d.id
            got[1] += d.name
            got[2] += d.arguments
    last = messages[-1]
    assert last.HasField("route") and last.HasField("usage"), "the last message ends the stream"
    calls = [tuple(parts[i]) for i in sorted(parts)]
    return Answer(text, reasoning, calls, last.finish_reason, last.usage, last.route, len(messages))  # type: ignore[arg-type]


def sent(fake: FakeUpstream, vendor: str) -> dict[str, Any]:
    body = fake.requests_to(VENDORS[vendor].route)[-1].json
    assert isinstance(body, dict)
    return body


def tools_sent(body: dict[str, Any], vendor: str) -> list[tuple[str, Any]]:
    """(name, schema) of each tool as the vendor's body carries it."""
    if vendor == "anthropic":
        return [(t["name"], t["input_schema"]) for t in body["tools"]]
    return [(t["function"]["name"], t["function"]["parameters"]) for t in body["tools"]]


# --- tools -----------------------------------------------------------------------------------


@ALL
@BOTH
async def test_a_tool_call_comes_back_with_its_id_name_and_arguments(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str, stream: bool
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    fake_upstream.set_default(Reply(text="", tool_calls=(Call(),), finish="tool_calls"))

    answer = await call(
        gateway,
        stream,
        messages=[ASK],
        tools=[WEATHER],
        tool_choice=pb.ToolChoice(function="get_weather"),
    )

    expected_id = "call_0" if vendor == "ollama" else "call_fake_1"  # Ollama's calls have no id
    assert answer.calls == [(expected_id, "get_weather", '{"city": "Oslo"}')]
    assert answer.finish == pb.FINISH_REASON_TOOL_CALLS
    assert answer.text == ""
    body = sent(fake_upstream, vendor)
    assert tools_sent(body, vendor) == [("get_weather", WEATHER_SCHEMA)]  # "minimum": 1 stays 1
    if vendor == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    elif vendor == "ollama":
        assert "tool_choice" not in body  # Ollama has none: only the named tool is offered
    else:
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    if stream and vendor != "ollama":
        assert answer.messages >= 4  # the call's start and its arguments in fragments, then end


@ALL
async def test_tool_choice_modes_and_parallel_calls_in_the_vendors_terms(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    seen = []
    for mode in (pb.TOOL_CHOICE_MODE_AUTO, pb.TOOL_CHOICE_MODE_REQUIRED, pb.TOOL_CHOICE_MODE_NONE):
        await gateway.stub.Complete(
            pb.CompleteRequest(
                messages=[ASK],
                tools=[WEATHER],
                tool_choice=pb.ToolChoice(mode=mode),
                parallel_tool_calls=False,
            )
        )
        body = sent(fake_upstream, vendor)
        seen.append((body.get("tool_choice"), body.get("parallel_tool_calls"), "tools" in body))
    if vendor == "anthropic":
        assert seen == [
            ({"type": "auto", "disable_parallel_tool_use": True}, None, True),
            ({"type": "any", "disable_parallel_tool_use": True}, None, True),
            ({"type": "none"}, None, True),
        ]
    elif vendor == "ollama":
        assert seen == [(None, None, True), (None, None, True), (None, None, False)]
    else:
        assert seen == [("auto", False, True), ("required", False, True), ("none", False, True)]


@ALL
async def test_a_tool_result_goes_back_in_the_vendors_shape(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    made = pb.ToolCall(id="call_7", name="get_weather", arguments='{"city": "Oslo"}')
    conversation = [
        pb.Message(role=pb.ROLE_SYSTEM, content="Be brief."),
        ASK,
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[made]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_7", content="-3C and snow"),
    ]
    fake_upstream.set_default(Reply(text="It is -3C and snowing in Oslo."))

    response = await gateway.stub.Complete(
        pb.CompleteRequest(messages=conversation, tools=[WEATHER])
    )

    assert response.text == "It is -3C and snowing in Oslo."
    turns = sent(fake_upstream, vendor)["messages"]
    if vendor == "anthropic":
        assert turns[1:] == [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_7",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_7", "content": "-3C and snow"}
                ],
            },
        ]
    elif vendor == "ollama":
        assert turns[2:] == [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
                ],
            },
            {"role": "tool", "content": "-3C and snow", "tool_name": "get_weather"},
        ]
    else:
        assert turns[2:] == [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_7",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_7", "content": "-3C and snow"},
        ]


# --- images ----------------------------------------------------------------------------------


def image_turn(*images: pb.Image) -> pb.Message:
    parts = [pb.Part(text="What is in these?"), *(pb.Part(image=i) for i in images)]
    return pb.Message(role=pb.ROLE_USER, parts=parts)


INLINE = pb.Image(data=PNG, mime_type="image/png")
BY_URL = pb.Image(url="https://example.com/cat.jpg")


@pytest.mark.parametrize("vendor", ["openai", "azure_openai", "anthropic"])
@BOTH
async def test_images_inline_and_by_url_reach_the_vendor_as_its_image_parts(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str, stream: bool
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))

    await call(gateway, stream, messages=[image_turn(INLINE, BY_URL)])

    content = sent(fake_upstream, vendor)["messages"][0]["content"]
    encoded = base64.b64encode(PNG).decode()
    if vendor == "anthropic":
        assert content == [
            {"type": "text", "text": "What is in these?"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": encoded},
            },
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]
    else:
        assert content == [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]


@BOTH
async def test_ollama_takes_inline_images_and_an_image_url_fails_over_past_it(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, stream: bool
) -> None:
    gateway = await gateway_for(
        start_gateway, provider("ollama", fake_upstream), provider("openai", fake_upstream)
    )

    await call(gateway, stream, messages=[image_turn(INLINE)])
    turn = sent(fake_upstream, "ollama")["messages"][0]
    assert turn == {
        "role": "user",
        "content": "What is in these?",
        "images": [base64.b64encode(PNG).decode()],
    }

    answer = await call(gateway, stream, messages=[image_turn(BY_URL)])
    assert answer.route.provider == "openai"
    assert fake_upstream.count("ollama.chat") == 1  # the URL was never sent to Ollama
    providers = {p.name: p for p in (await gateway.admin.ListProviders(_admin())).providers}
    assert providers["ollama"].breaker_state == 1  # not blamed: its breaker stays closed


def _admin() -> Any:
    from hapax.v1 import admin_service_pb2

    return admin_service_pb2.ListProvidersRequest()


# --- structured output -----------------------------------------------------------------------

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
JSON_SCHEMA = pb.ResponseFormat(
    type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
    json_schema=pb.JsonSchema(
        name="forecast",
        schema=json_format.ParseDict(ANSWER_SCHEMA, struct_pb2.Struct()),
        strict=True,
    ),
)
FORECAST = '{"city": "Oslo", "celsius": -3}'


@ALL
@BOTH
async def test_a_json_schema_answer_in_each_vendors_way(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str, stream: bool
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    if vendor == "anthropic":  # a forced tool named after the schema carries the answer
        reply = Reply(
            text="", tool_calls=(Call("toolu_1", "forecast", FORECAST),), finish="tool_calls"
        )
    else:
        reply = Reply(text=FORECAST)
    fake_upstream.set_default(reply)

    answer = await call(gateway, stream, messages=[ASK], response_format=JSON_SCHEMA)

    assert json.loads(answer.text) == {"city": "Oslo", "celsius": -3}
    assert answer.finish == pb.FINISH_REASON_STOP and answer.calls == []
    body = sent(fake_upstream, vendor)
    if vendor == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "forecast"}
        assert tools_sent(body, vendor) == [("forecast", ANSWER_SCHEMA)]
    elif vendor == "ollama":
        assert body["format"] == ANSWER_SCHEMA
    else:
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "forecast", "schema": ANSWER_SCHEMA, "strict": True},
        }


@ALL
async def test_a_json_object_answer(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    if vendor == "anthropic":
        fake_upstream.set_default(
            Reply(
                text="", tool_calls=(Call("toolu_1", "json_answer", FORECAST),), finish="tool_calls"
            )
        )
    else:
        fake_upstream.set_default(Reply(text=FORECAST))

    response = await gateway.stub.Complete(
        pb.CompleteRequest(
            messages=[ASK],
            response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
        )
    )

    assert json.loads(response.text)["city"] == "Oslo"
    body = sent(fake_upstream, vendor)
    if vendor == "anthropic":
        assert tools_sent(body, vendor) == [("json_answer", {"type": "object"})]
    elif vendor == "ollama":
        assert body["format"] == "json"
    else:
        assert body["response_format"] == {"type": "json_object"}


async def test_anthropic_structured_output_beside_the_callers_own_tools(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """With tools of its own, the model may call one of them (a tool call comes back) or answer
    through the answer tool (the answer comes back as text)."""
    gateway = await gateway_for(start_gateway, provider("anthropic", fake_upstream))
    fake_upstream.script(
        "anthropic.messages",
        Reply(text="", tool_calls=(Call(),), finish="tool_calls"),
        Reply(text="", tool_calls=(Call("toolu_2", "forecast", FORECAST),), finish="tool_calls"),
    )
    request = pb.CompleteRequest(messages=[ASK], tools=[WEATHER], response_format=JSON_SCHEMA)

    first = await gateway.stub.Complete(request)
    second = await gateway.stub.Complete(request)

    assert [c.name for c in first.tool_calls] == ["get_weather"]
    assert first.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert json.loads(second.text) == {"city": "Oslo", "celsius": -3} and not second.tool_calls
    body = sent(fake_upstream, "anthropic")
    assert [name for name, _ in tools_sent(body, "anthropic")] == ["get_weather", "forecast"]
    assert body["tool_choice"] == {"type": "any"}


# --- reasoning, usage details, settings --------------------------------------------------------


@ALL
@BOTH
async def test_reasoning_comes_apart_from_the_answer_with_usage_details(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str, stream: bool
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    fake_upstream.set_default(
        Reply(
            text="Cold.",
            reasoning="Oslo in winter is cold.",
            prompt_tokens=20,
            cached_tokens=12,
            completion_tokens=9,
            reasoning_tokens=6,
        )
    )

    answer = await call(gateway, stream, messages=[ASK])

    assert (answer.text, answer.reasoning) == ("Cold.", "Oslo in winter is cold.")
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 9)
    cached = 0 if vendor == "ollama" else 12  # Ollama reports no cache
    reasoning = 6 if vendor in ("openai", "azure_openai") else 0  # only OpenAI counts them apart
    assert (usage.cached_prompt_tokens, usage.reasoning_tokens) == (cached, reasoning)


@ALL
async def test_seed_penalties_and_vendor_options_reach_the_body(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, vendor: str
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream))
    options = {
        "openai": {"reasoning_effort": "low"},
        "anthropic": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        "ollama": {"think": True, "keep_alive": "5m"},
    }

    await gateway.stub.Complete(
        pb.CompleteRequest(
            messages=[ASK],
            seed=42,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            vendor_options={
                k: json_format.ParseDict(v, struct_pb2.Struct()) for k, v in options.items()
            },
        )
    )

    body = sent(fake_upstream, vendor)
    if vendor == "anthropic":  # no seed or penalties in Anthropic's API: not sent
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert not {"seed", "presence_penalty", "frequency_penalty", "think"} & set(body)
    elif vendor == "ollama":
        assert (body["think"], body["keep_alive"]) == (True, "5m")
        assert body["options"] == {"seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5}
    else:
        assert body["reasoning_effort"] == "low" and "thinking" not in body
        assert (body["seed"], body["presence_penalty"], body["frequency_penalty"]) == (
            42,
            0.5,
            -0.5,
        )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"openai": {"model": "gpt-5"}}, "vendor_options['openai']"),
        ({"sagemaker": {"x": 1}}, "vendor_options['sagemaker']"),
        ({"openai": {"blob": "x" * 20_000}}, "vendor_options"),
    ],
    ids=["reserved-field", "unknown-wire", "too-big"],
)
async def test_bad_vendor_options_are_bad_request_violations(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, options: dict[str, Any], field: str
) -> None:
    gateway = await gateway_for(start_gateway, provider("openai", fake_upstream))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(
            pb.CompleteRequest(
                messages=[ASK],
                vendor_options={
                    k: json_format.ParseDict(v, struct_pb2.Struct()) for k, v in options.items()
                },
            )
        )
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violated_fields == [field]
    assert fake_upstream.count("openai.chat") == 0


async def test_tool_schema_and_image_limits_are_configurable_bad_request_violations(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[provider("openai", fake_upstream)],
            default_model="chat",
            server={"max_tools": 1, "max_schema_bytes": 100, "max_image_bytes": 8},
        )
    )
    big = {"type": "object", "description": "x" * 200}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(
            pb.CompleteRequest(
                messages=[image_turn(INLINE)],
                tools=[
                    WEATHER,
                    pb.Tool(
                        function=pb.FunctionDeclaration(
                            name="big", parameters=json_format.ParseDict(big, struct_pb2.Struct())
                        )
                    ),
                ],
            )
        )
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violated_fields == [
        "messages",  # the inline image is over 8 bytes
        "tools",  # two tools, one allowed
        "tools[0].function.parameters",  # over 100 bytes as JSON
        "tools[1].function.parameters",
    ]
    assert fake_upstream.count("openai.chat") == 0
