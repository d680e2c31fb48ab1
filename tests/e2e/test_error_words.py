"""Errors that say what happened: a request no configured provider can ever serve is refused for
good (FAILED_PRECONDITION, no RetryInfo), not UNAVAILABLE with a retry delay; and a stream the
upstream breaks off ends with one short line in the gateway's words, for every adapter and both
doors, its technical cause in the access log only."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import openai
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import model_service_pb2, model_service_pb2_grpc
from tests.conftest import AccessLog, StartGateway, make_settings
from tests.e2e.test_rich_contract import VENDORS, provider
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.support.status_details import details_of

PICTURE = pb.Message(
    role=pb.ROLE_USER,
    parts=[
        pb.Part(text="What is in this?"),
        pb.Part(image=pb.Image(url="https://example.com/cat.png")),
    ],
)
DOOR = {"enabled": True, "address": "127.0.0.1:0"}


def sdk(gateway: Any) -> openai.AsyncOpenAI:
    assert gateway.app.openai_http is not None
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.app.openai_http.port}/v1",
        api_key="unused",
        max_retries=0,
    )


async def failed(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            [m async for m in call]
        else:
            await call
    return caught.value


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_an_image_url_for_a_model_only_ollama_serves_is_refused_for_good(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, stream: bool
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[provider("ollama", fake_upstream)], default_model="chat", openai_http=DOOR
        )
    )
    if stream:
        call: Any = gateway.stub.StreamComplete(pb.StreamCompleteRequest(messages=[PICTURE]))
    else:
        call = gateway.stub.Complete(pb.CompleteRequest(messages=[PICTURE]))
    got = details_of(await failed(call))
    assert got.code is grpc.StatusCode.FAILED_PRECONDITION
    assert got.info is not None and got.info.reason == "CAPABILITY_MISSING"
    assert got.info.metadata["capability"] == "image_urls"
    assert got.retry is None, "waiting cannot help: no RetryInfo"
    assert "image_urls" in (got.message or "")
    assert fake_upstream.count("ollama.chat") == 0

    async with sdk(gateway) as client:  # the HTTP door says the same, as a 400
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="chat",
                stream=stream,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/a.png"},
                            },
                        ],
                    }
                ],
            )
    assert caught.value.code == "capability_missing"

    # The same image inline is served by Ollama.
    inline = pb.Message(
        role=pb.ROLE_USER,
        parts=[pb.Part(image=pb.Image(data=b"\x89PNG fake", mime_type="image/png"))],
    )
    answer = await gateway.stub.Complete(pb.CompleteRequest(messages=[inline]))
    assert answer.route.provider == "ollama"
    sent = fake_upstream.requests_to("ollama.chat")[-1].json
    assert sent["messages"][0]["images"] == [base64.b64encode(b"\x89PNG fake").decode()]


async def test_model_list_says_which_providers_take_image_urls(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(providers=[provider(v, fake_upstream) for v in VENDORS], default_model="chat")
    )
    listed = await model_service_pb2_grpc.ModelServiceStub(gateway.channel).ListModels(
        model_service_pb2.ListModelsRequest()
    )
    [chat] = [m for m in listed.models if m.name == "chat"]
    urls = {r.provider_type: r.capabilities.image_urls for r in chat.routes}
    assert urls == {"openai": True, "azure_openai": True, "anthropic": True, "ollama": False}
    assert all(r.capabilities.images for r in chat.routes)


async def test_a_model_no_provider_serves_upstream_is_failed_precondition_without_retry(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[provider("openai", fake_upstream), provider("anthropic", fake_upstream)],
            default_model="chat",
            router={"retry": {"max_attempts": 1}},
        )
    )
    fake_upstream.set_default(Fail(404))  # neither has the configured upstream model
    got = details_of(await failed(gateway.stub.Complete(pb.CompleteRequest(prompt="hi"))))
    assert got.code is grpc.StatusCode.FAILED_PRECONDITION
    assert got.info is not None and got.info.reason == "NO_PROVIDER_AVAILABLE"
    assert got.info.metadata["attempts"] == "openai:model_unavailable,anthropic:model_unavailable"
    assert got.retry is None

    fake_upstream.set_default(Fail(503))  # down: waiting can help
    got = details_of(await failed(gateway.stub.Complete(pb.CompleteRequest(prompt="hi"))))
    assert got.code is grpc.StatusCode.UNAVAILABLE and got.retry is not None


@pytest.mark.parametrize("vendor", list(VENDORS))
@pytest.mark.parametrize("door", ["grpc", "http"])
async def test_a_stream_broken_off_upstream_says_so_in_one_line_with_the_cause_in_the_log(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    access_log: AccessLog,
    vendor: str,
    door: str,
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=[provider(vendor, fake_upstream)],
            default_model="chat",
            router={"retry": {"max_attempts": 1}},
            openai_http=DOOR,
        )
    )
    fake_upstream.set_default(Reply(text="one two three four", chunks=4, drop_after=3))
    name = vendor.replace("_", "-")
    said = f"the upstream {name} closed the stream after 3 chunks"
    if door == "grpc":
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x")):
                received.append(message.delta)
        got = details_of(caught.value)
        assert got.code is grpc.StatusCode.UNAVAILABLE
        assert got.info is not None and got.info.reason == "STREAM_INTERRUPTED"
        assert got.message == said
        assert "".join(received).split() == ["one", "two", "three"]
    else:
        async with sdk(gateway) as client:
            stream = await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "x"}], stream=True
            )
            with pytest.raises(openai.APIError) as broke:
                [chunk async for chunk in stream]
        assert broke.value.message == said
    await access_log.wait_for(1)
    line = vars(access_log.records[-1])
    assert line["error_reason"] == "STREAM_INTERRUPTED"
    assert line["error"].startswith(said + " ("), "the technical cause follows, in the log only"
    assert len(line["error"]) > len(said) + 3
