"""The Python client (clients/python: hapax.Client, hapax.AsyncClient) against a live gateway:
every service, the API key, the deadline, gRPC's own retry policy for UNAVAILABLE, and
HapaxError's decoded details. The blocking client runs in a worker thread, since the gateway
under test runs on this test's event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from hapax import AsyncClient, Client, HapaxError
from hapaxd.providers.local import PREFIX, vector
from tests.admission.conftest import SEARCH_KEY, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Reply

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def in_thread(gateway: Gateway, work: Any, **options: Any) -> Any:
    def run() -> Any:
        with Client(gateway.address, **options) as client:
            return work(client)

    return await asyncio.to_thread(run)


async def test_the_blocking_client_calls_every_service(gateway: Gateway) -> None:
    def work(client: Client) -> dict[str, Any]:
        return {
            "complete": client.complete("hello"),
            "stream": list(client.stream("stream me")),
            "tools": client.complete(
                messages=[{"role": "user", "content": "Oslo?"}],
                tools=[WEATHER],
                tool_choice="get_weather",
            ),
            "json": client.complete("forecast", json_schema={"name": "f", "schema": {
                "type": "object", "properties": {"celsius": {"type": "number"}}}}),
            "embed": client.embed(["hello"], dimensions=4),
            "models": client.models(),
            "health": client.health(),
        }  # fmt: skip

    got = await in_thread(gateway, work)

    assert got["complete"].text == f"{PREFIX} You said: hello"
    last = got["stream"][-1]
    assert "".join(p.delta for p in got["stream"]) == f"{PREFIX} You said: stream me"
    assert last.route.provider == "local" and last.usage.total_tokens > 0
    [call] = got["tools"].tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments)["city"].startswith(PREFIX)
    assert json.loads(got["json"].text) == {"celsius": 0}
    assert list(got["embed"].embeddings[0].values) == pytest.approx(list(vector("hello", 4)))
    assert [m.name for m in got["models"].models] == ["default", "*"]
    assert got["health"] == "SERVING"


async def test_the_async_client_calls_every_service(gateway: Gateway) -> None:
    async with AsyncClient(gateway.address) as client:
        reply = await client.complete("hello")
        streamed = [m async for m in client.stream("hi", max_tokens=3)]
        vectors = await client.embed(["a", "b"])
        listing = await client.models()
        health = await client.health("hapax.v1.CompletionService")

    assert reply.text.endswith("You said: hello")
    assert len(streamed) == 4 and streamed[-1].finish_reason == 2  # FINISH_REASON_LENGTH
    assert len(vectors.embeddings) == 2
    assert listing.default_model == "default" and health == "SERVING"


async def test_the_key_goes_with_every_call_and_errors_carry_their_details(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        make_settings(auth={"keys": keys(search={"requests_per_minute": 1})})
    )
    async with AsyncClient(gateway.address, api_key=SEARCH_KEY, retries=1) as client:
        assert (await client.complete("hello")).text
        with pytest.raises(HapaxError) as limited:
            await client.complete("again")
        with pytest.raises(HapaxError) as bad:
            await client.complete("x", temperature=7.0)
    async with AsyncClient(gateway.address) as anonymous:
        with pytest.raises(HapaxError) as missing:
            await anonymous.models()

    assert limited.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.value.reason == "RATE_LIMITED" and limited.value.retry_after
    assert limited.value.quota[0].field == "api_key:search"
    assert limited.value.request_id
    assert bad.value.reason == "INVALID_REQUEST"
    assert [v.field for v in bad.value.violations] == ["temperature"]
    assert (missing.value.code, missing.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_MISSING",
    )


async def test_a_deadline_ends_the_call(start_gateway: StartGateway) -> None:
    slow = {
        "name": "slow",
        "type": "local",
        "models": {"*": "local"},
        "options": {"chunk_delay": "200ms"},
    }
    gateway = await start_gateway(make_settings(providers=[slow]))
    async with AsyncClient(gateway.address, timeout=0.3) as client:
        with pytest.raises(HapaxError) as caught:
            [m async for m in client.stream("a long answer with many words")]
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_unavailable_is_retried_by_grpcs_own_policy(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    up = {
        "name": "up",
        "type": "openai",
        "base_url": fake_upstream.base_url("openai"),
        "models": {"*": "*"},
    }
    gateway = await start_gateway(
        make_settings(providers=[up], router={"retry": {"max_attempts": 1}})
    )
    fake_upstream.script("openai.chat", Fail(503), Reply(text="second time lucky"))
    async with AsyncClient(gateway.address) as client:
        reply = await client.complete("hello")
    assert reply.text == "second time lucky"
    assert fake_upstream.count("openai.chat") == 2

    fake_upstream.script("openai.chat", Fail(503))
    async with AsyncClient(gateway.address, retries=1) as once:
        with pytest.raises(HapaxError) as caught:
            await once.complete("hello")
    assert caught.value.reason == "NO_PROVIDER_AVAILABLE" and caught.value.retry_after == 1.0
