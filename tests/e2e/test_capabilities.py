"""Capabilities: routing skips a provider not declared able to do what a request needs, and when
none of a model's providers can, the caller gets FAILED_PRECONDITION naming the capability.
Deduplication keys cover the new fields: requests differing only in their tools never share an
answer."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream
from tests.support.status_details import details_of

ASK = pb.Message(role=pb.ROLE_USER, content="hello")
SCHEMA = json_format.ParseDict({"type": "object", "properties": {}}, struct_pb2.Struct())


def tool(name: str) -> pb.Tool:
    return pb.Tool(function=pb.FunctionDeclaration(name=name, parameters=SCHEMA))


def openai(name: str, fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"chat": f"{name}-model", "vision": f"{name}-vision"},
        **extra,
    }


IMAGE = pb.Message(
    role=pb.ROLE_USER,
    parts=[pb.Part(text="look"), pb.Part(image=pb.Image(url="https://example.com/a.png"))],
)
NEEDS = {
    "tools": {"messages": [ASK], "tools": [tool("f")]},
    "images": {"messages": [IMAGE]},
    "json_schema": {
        "messages": [ASK],
        "response_format": pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
    },
}


@pytest.mark.parametrize("capability", list(NEEDS))
async def test_a_request_skips_the_provider_that_lacks_what_it_needs(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, capability: str
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[
                openai("plain", fake_upstream, capabilities=["streaming"]),
                openai("able", fake_upstream),
            ],
            default_model="chat",
        )
    )

    rich = await gateway.stub.Complete(pb.CompleteRequest(**NEEDS[capability]))
    plain = await gateway.stub.Complete(pb.CompleteRequest(messages=[ASK]))

    assert rich.route.provider == "able" and rich.route.attempts == 1  # skipped, not tried
    assert plain.route.provider == "plain"
    models = [r.json["model"] for r in fake_upstream.requests_to("openai.chat")]
    assert models == ["able-model", "plain-model"]


@pytest.mark.parametrize("capability", list(NEEDS))
@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
async def test_nothing_able_is_failed_precondition_naming_the_capability(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, capability: str, rpc: str
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[openai("plain", fake_upstream, capabilities=["streaming"])],
            default_model="chat",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "Complete":
            await gateway.stub.Complete(pb.CompleteRequest(**NEEDS[capability]))
        else:
            request = pb.StreamCompleteRequest(**NEEDS[capability])
            [m async for m in gateway.stub.StreamComplete(request)]
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.info is not None and details.info.reason == "CAPABILITY_MISSING"
    assert dict(details.info.metadata) | {"request_id": ""} == {
        "model": "chat",
        "capability": capability,
        "request_id": "",
    }
    assert fake_upstream.count("openai.chat") == 0


async def test_capabilities_are_declared_per_model(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """`model_capabilities` overrides the provider's list for one logical model: here only
    "vision" takes images, and streaming is off for it."""
    gateway = await start_gateway(
        make_settings(
            providers=[
                openai(
                    "p",
                    fake_upstream,
                    capabilities=["streaming", "tools"],
                    model_capabilities={"vision": ["images"]},
                )
            ],
            default_model="chat",
        )
    )
    seen = await gateway.stub.Complete(pb.CompleteRequest(model="vision", messages=[IMAGE]))
    assert seen.route.upstream_model == "p-vision"
    with pytest.raises(grpc.aio.AioRpcError) as no_images:
        await gateway.stub.Complete(pb.CompleteRequest(model="chat", messages=[IMAGE]))
    with pytest.raises(grpc.aio.AioRpcError) as no_stream:
        [
            m
            async for m in gateway.stub.StreamComplete(
                pb.StreamCompleteRequest(model="vision", messages=[ASK])
            )
        ]
    assert details_of(no_images.value).info.metadata["capability"] == "images"  # type: ignore[union-attr]
    assert details_of(no_stream.value).info.metadata["capability"] == "streaming"  # type: ignore[union-attr]
    streamed = [
        m
        async for m in gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(model="chat", messages=[ASK])
        )
    ]
    assert streamed[-1].route.provider == "p"


def test_model_capabilities_must_name_a_served_model() -> None:
    from hapaxd.config import ConfigError

    with pytest.raises(ConfigError, match="model_capabilities"):
        make_settings(
            providers=[
                {
                    "name": "p",
                    "type": "openai",
                    "models": {"chat": "m"},
                    "model_capabilities": {"vison": ["images"]},
                }
            ],
            default_model="chat",
        )


async def test_requests_differing_only_in_tools_never_share_an_answer(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[openai("p", fake_upstream)],
            default_model="chat",
            dedup={"share_across_callers": True},
        )
    )
    fake_upstream.hold()

    def ask(*tools: pb.Tool) -> Any:
        return gateway.stub.Complete(
            pb.CompleteRequest(messages=[ASK], temperature=0.0, tools=list(tools))
        )

    calls = [
        asyncio.ensure_future(ask(tool("a"))),
        asyncio.ensure_future(ask(tool("a"))),  # identical to the first: shares its call
        asyncio.ensure_future(ask(tool("b"))),
        asyncio.ensure_future(ask()),
    ]
    await fake_upstream.wait_for_requests(3)
    await asyncio.sleep(0.1)  # a fourth upstream call, if one were coming, would now be seen
    fake_upstream.release()
    answers = await asyncio.gather(*calls)

    assert fake_upstream.count("openai.chat") == 3
    shared = [a.route.shared for a in answers]
    assert sorted(shared[:2]) == [False, True] and shared[2:] == [False, False]
    sent_tools = sorted(
        tuple(t["function"]["name"] for t in r.json.get("tools", []))
        for r in fake_upstream.requests_to("openai.chat")
    )
    assert sent_tools == [(), ("a",), ("b",)]
