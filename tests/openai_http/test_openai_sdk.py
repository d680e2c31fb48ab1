"""The OpenAI-compatible HTTP door, driven by the real `openai` Python SDK as its client: plain
and streamed chat (with `stream_options.include_usage`), tool calls, embeddings (the SDK's own
base64 default and floats), the model list, an API key passed the way the SDK passes it, and
errors raised as the SDK's own exception types. Behind it the same router as gRPC callers:
failover, the key's policy and limits, metrics and the access log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from hapaxd.providers.local import PREFIX, vector
from tests.admission.conftest import NARROW_KEY, SEARCH_KEY, keys
from tests.conftest import AccessLog, Gateway, StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Reply

DOOR = {"enabled": True, "address": "127.0.0.1:0"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def client(gateway: Gateway, key: str = "unused") -> openai.AsyncOpenAI:
    assert gateway.app.openai_http is not None
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.app.openai_http.port}/v1",
        api_key=key,
        max_retries=0,  # the SDK retries 429 and 5xx by itself; these tests see each answer
    )


@pytest.fixture
async def sdk(start_gateway: StartGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    gateway = await start_gateway(make_settings(openai_http=DOOR))
    async with client(gateway) as c:
        yield c


async def test_a_plain_chat_completion(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hello"}]
    )
    [choice] = completion.choices
    assert choice.message.content == f"{PREFIX} You said: hello"
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert completion.model == "default" and completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_a_streamed_chat_completion_with_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{PREFIX} You said: stream me"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_tool_calls_unary_and_streamed(sdk: openai.AsyncOpenAI) -> None:
    asked = [{"role": "user", "content": "Weather in Oslo?"}]
    completion = await sdk.chat.completions.create(
        model="default", messages=asked, tools=[WEATHER], tool_choice="required"
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": f"{PREFIX} Weather in Oslo?"}

    stream = await sdk.chat.completions.create(
        model="default", messages=asked, tools=[WEATHER], stream=True
    )
    pieces: dict[int, list[str]] = {}
    finish = None
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            got = pieces.setdefault(delta.index, ["", "", ""])
            got[0] += delta.id or ""
            got[1] += (delta.function.name or "") if delta.function else ""
            got[2] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert pieces == {0: [call.id, "get_weather", call.function.arguments]}
    assert finish == "tool_calls"

    answered = await sdk.chat.completions.create(
        model="default",
        messages=[
            *asked,
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "-3C"},
        ],
        tools=[WEATHER],
    )
    assert answered.choices[0].message.content == f"{PREFIX} The tool returned: -3C"


async def test_a_json_schema_answer(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "forecast"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "forecast",
                "schema": {"type": "object", "properties": {"celsius": {"type": "number"}}},
            },
        },
    )
    assert json.loads(completion.choices[0].message.content or "") == {"celsius": 0}


async def test_embeddings_in_the_sdks_base64_default_and_as_floats(
    sdk: openai.AsyncOpenAI,
) -> None:
    default = await sdk.embeddings.create(model="default", input=["hello", "world"])
    floats = await sdk.embeddings.create(
        model="default", input="hello", dimensions=4, encoding_format="float"
    )

    assert [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == pytest.approx(list(vector("hello", 16)), abs=1e-6)
    assert floats.data[0].embedding == pytest.approx(list(vector("hello", 4)), abs=1e-6)
    assert default.usage.prompt_tokens == 2


async def test_the_model_list(sdk: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in sdk.models.list()]
    assert models == ["default"]


async def test_errors_are_the_sdks_own_exception_types(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        make_settings(
            openai_http=DOOR,
            auth={"keys": keys(search={"requests_per_minute": 2})},
        )
    )
    hello = [{"role": "user", "content": "hello"}]
    async with client(gateway, "not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError) as caught:
            await stranger.chat.completions.create(model="default", messages=hello)
    assert caught.value.status_code == 401
    assert caught.value.code == "api_key_invalid"

    async with client(gateway, NARROW_KEY) as narrow:  # chat-* models only
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await narrow.chat.completions.create(model="default", messages=hello)
    assert denied.value.code == "model_not_allowed"

    async with client(gateway, SEARCH_KEY) as search:
        with pytest.raises(openai.BadRequestError) as bad:
            await search.chat.completions.create(model="m", messages=hello, temperature=5)
        assert bad.value.code == "invalid_request" and bad.value.param == "temperature"
        await search.chat.completions.create(model="m", messages=hello)
        await search.chat.completions.create(model="m", messages=hello)
        with pytest.raises(openai.RateLimitError) as limited:
            await search.chat.completions.create(model="m", messages=hello)
    assert limited.value.code == "rate_limited"
    assert int(limited.value.response.headers["retry-after"]) >= 1


async def test_the_same_router_fails_over_and_the_call_is_counted_and_logged(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, access_log: AccessLog
) -> None:
    def up(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "openai",
            "base_url": fake_upstream.base_url("openai"),
            "models": {"chat": f"{name}-model"},
        }

    gateway = await start_gateway(
        make_settings(
            openai_http=DOOR,
            providers=[up("first"), up("second")],
            default_model="chat",
            router={"retry": {"max_attempts": 1}},
        )
    )
    fake_upstream.script("openai.chat", Fail(503), Reply(text="from the second"))
    async with client(gateway) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        missing = sdk.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(openai.NotFoundError):
            await missing

    completion = raw.parse()
    assert completion.choices[0].message.content == "from the second"
    assert (raw.headers["x-hapax-provider"], raw.headers["x-hapax-attempts"]) == ("second", "2")
    metrics = gateway.app.observability.metrics.registry
    assert (
        metrics.get_sample_value("hapax_grpc_requests_total", {"method": "Complete", "code": "OK"})
        == 1
    )
    assert (
        metrics.get_sample_value(
            "hapax_grpc_requests_total", {"method": "Complete", "code": "NOT_FOUND"}
        )
        == 1
    )
    await access_log.wait_for(2)
    line = vars(access_log.records[0])
    assert (line["method"], line["provider"], line["attempts"]) == ("Complete", "second", 2)


def slow_upstream(fake: FakeUpstream) -> dict[str, Any]:
    return {
        "name": "up",
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"chat": "up-model"},
    }


async def test_a_caller_that_leaves_mid_stream_costs_only_its_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            openai_http=DOOR, providers=[slow_upstream(fake_upstream)], default_model="chat"
        )
    )
    fake_upstream.set_default(Reply(text="one two three four five", chunks=5, pause_after=2))
    async with client(gateway) as sdk:
        stream = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # leave after the first piece of text
        await stream.close()
    await fake_upstream.wait_for_disconnects(1)  # the upstream request was closed too
    fake_upstream.release()
    for _ in range(100):
        if gateway.app.door.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert gateway.app.door.in_flight == 0

    async with client(gateway) as sdk:  # and the gateway serves on
        fake_upstream.set_default(Reply(text="fine"))
        answer = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "again"}]
        )
    assert answer.choices[0].message.content == "fine"


async def test_a_stream_broken_upstream_ends_with_an_error_event(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            openai_http=DOOR, providers=[slow_upstream(fake_upstream)], default_model="chat"
        )
    )
    fake_upstream.set_default(Reply(text="one two three", chunks=3, drop_after=2))
    async with client(gateway) as sdk:
        stream = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            [chunk async for chunk in stream]
    assert "stream" in str(caught.value.message).lower()


async def test_a_body_that_is_not_json_is_a_bad_request(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(make_settings(openai_http=DOOR))
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"{nope", headers={"x-request-id": "r-1"}) as response:
            body = await response.json()
            assert response.status == 400
            assert response.headers["x-request-id"] == "r-1"
    assert body["error"]["param"] == "body" and body["error"]["type"] == "invalid_request_error"


async def test_identical_http_calls_in_flight_share_one_upstream_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            openai_http=DOOR,
            providers=[slow_upstream(fake_upstream)],
            default_model="chat",
            dedup={"share_across_callers": True},
        )
    )
    fake_upstream.hold()
    async with client(gateway) as sdk:
        calls = [
            asyncio.ensure_future(
                sdk.chat.completions.with_raw_response.create(
                    model="chat", messages=[{"role": "user", "content": "same"}], temperature=0
                )
            )
            for _ in range(3)
        ]
        await fake_upstream.wait_for_requests(1)
        await asyncio.sleep(0.1)  # a second upstream call, if one were coming, would now be seen
        fake_upstream.release()
        answers = [(await c).parse() for c in calls]
    assert fake_upstream.count("openai.chat") == 1
    assert len({a.choices[0].message.content for a in answers}) == 1
