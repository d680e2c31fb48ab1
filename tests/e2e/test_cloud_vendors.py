"""Gemini API, Vertex AI and AWS Bedrock end to end: a real gRPC channel to a gateway whose
config names the provider as a user writes it (Gemini's key from api_key_env, Vertex's
service-account key file from options.credentials_file, Bedrock's credentials from the AWS
chain in the environment), in front of the fake upstream speaking that vendor's wire (its token
endpoint, SigV4 checks and event-stream frames included). The adapter-level scenario suite
(tests/providers/test_adapters.py) covers each wire in depth; these show the whole path: proto
in, the vendor's wire out and back, proto out, with usage, route, failover and error details."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import grpc
import openai
import pytest
from google.protobuf import json_format, struct_pb2

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import embedding_service_pb2 as embed_pb
from hapax.v1 import embedding_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc
from hapaxd import config
from tests.conftest import StartGateway
from tests.fakes.upstream import Call, Fail, FakeUpstream, Reply, aws
from tests.support.status_details import details_of

GEMINI_KEY = "AIzaSyD-e2e-test-key-0123456789abcdefghijk"


@dataclasses.dataclass(frozen=True)
class Vendor:
    type: str
    chat: str  # the fake's route for completions
    embed: str  # the fake's route for embeddings
    chat_model: str  # the upstream model the logical "chat" maps to
    embed_model: str


VENDORS = {
    "gemini": Vendor(
        "gemini", "gemini.generate", "gemini.embed", "gemini-2.5-flash", "text-embedding-004"
    ),
    "vertex": Vendor(
        "vertex", "vertex.generate", "vertex.embed", "gemini-2.5-flash", "text-embedding-005"
    ),
    "bedrock": Vendor(
        "bedrock",
        "bedrock.converse",
        "bedrock.embed",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "cohere.embed-english-v3",
    ),
}  # fmt: skip
EACH = pytest.mark.parametrize("vendor", list(VENDORS))
ASK = pb.Message(role=pb.ROLE_USER, content="Say hello.")


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's AWS credentials where botocore's chain looks first."""
    aws.use_environment(monkeypatch)


def provider(
    vendor: str, fake: FakeUpstream, tmp_path: pathlib.Path, **extra: Any
) -> dict[str, Any]:
    """The provider entry as a user writes it in the config file."""
    v = VENDORS[vendor]
    entry: dict[str, Any] = {
        "name": vendor,
        "type": vendor,
        "base_url": fake.base_url(vendor),
        "models": {"chat": v.chat_model, "embed": v.embed_model},
    }
    if vendor == "gemini":
        entry["api_key_env"] = "GEMINI_API_KEY"
    elif vendor == "vertex":
        key_file = tmp_path / "service-account.json"
        key_file.write_text(fake.service_account())
        entry["options"] = {
            "project": "test-project",
            "location": "us-central1",
            "credentials_file": str(key_file),
        }
    else:
        entry["options"] = {"region": aws.REGION, "control_url": fake.url}
    return {**entry, **extra}


async def gateway_for(start: StartGateway, *providers: dict[str, Any], **extra: Any) -> Any:
    settings = config.parse(
        {
            "providers": list(providers),
            "default_model": "chat",
            "router": {"retry": {"max_attempts": 1}},
            "health_check": {"enabled": False},
            "metrics": {"address": "127.0.0.1:0"},
            "auth": {"enabled": False},
            **extra,
        },
        {"GEMINI_API_KEY": GEMINI_KEY},
    )
    return await start(settings)


@EACH
async def test_complete_and_stream_through_the_gateway(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path, vendor: str
) -> None:
    v = VENDORS[vendor]
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream, tmp_path))

    answer = await gateway.stub.Complete(pb.CompleteRequest(messages=[ASK], max_tokens=20))
    assert answer.text and answer.finish_reason == pb.FINISH_REASON_STOP
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.usage.total_tokens > 0
    assert answer.route.provider == vendor and answer.route.attempts == 1
    assert answer.model == "chat"
    assert fake_upstream.count(v.chat) == 1

    messages = [
        m
        async for m in gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(messages=[ASK], max_tokens=20)
        )
    ]
    assert len(messages) >= 3, "the vendor's chunks arrive as chunks, then the last message"
    assert "".join(m.delta for m in messages) == answer.text  # the fake answers the same text
    last = messages[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP and last.usage.total_tokens > 0
    assert last.route.provider == vendor
    assert fake_upstream.count(v.chat) == 2
    streamed = fake_upstream.requests_to(v.chat)[-1]
    assert ("stream" in streamed.path) or ("converse-stream" in streamed.path), streamed.path


@EACH
async def test_a_tool_call_comes_back_through_the_gateway(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path, vendor: str
) -> None:
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream, tmp_path))
    fake_upstream.script(
        VENDORS[vendor].chat,
        Reply(text="", finish="tool_calls", tool_calls=(Call(),)),
    )
    weather = pb.Tool(
        function=pb.FunctionDeclaration(
            name="get_weather",
            parameters=json_format.ParseDict(
                {"type": "object", "properties": {"city": {"type": "string"}}},
                struct_pb2.Struct(),
            ),
        )
    )

    answer = await gateway.stub.Complete(
        pb.CompleteRequest(messages=[ASK], tools=[weather], max_tokens=20)
    )

    assert answer.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert all(c.id for c in answer.tool_calls)  # Gemini's calls have none: the adapter names them


@EACH
async def test_embeddings_through_the_gateway(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path, vendor: str
) -> None:
    v = VENDORS[vendor]
    gateway = await gateway_for(start_gateway, provider(vendor, fake_upstream, tmp_path))
    stub = embedding_service_pb2_grpc.EmbeddingServiceStub(gateway.channel)

    response = await stub.Embed(embed_pb.EmbedRequest(model="embed", inputs=["hi", "hello"]))

    assert len(response.embeddings) == 2
    assert [e.index for e in response.embeddings] == [0, 1]
    first, second = (list(e.values) for e in response.embeddings)
    assert first and len(first) == len(second) and first != second
    assert response.route.provider == vendor
    assert fake_upstream.count(v.embed) >= 1


@EACH
async def test_a_throttled_vendor_fails_over_and_alone_says_when_to_retry(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path, vendor: str
) -> None:
    v = VENDORS[vendor]
    fake_upstream.set_default(Fail(429, retry_after="7"), v.chat)
    backup = {
        "name": "backup",
        "type": "openai",
        "base_url": fake_upstream.base_url("openai"),
        "api_key_env": "GEMINI_API_KEY",  # any key: the fake OpenAI takes any
        "models": {"chat": "up-model"},
    }
    both = await gateway_for(start_gateway, provider(vendor, fake_upstream, tmp_path), backup)

    answer = await both.stub.Complete(pb.CompleteRequest(messages=[ASK], max_tokens=20))
    assert answer.route.provider == "backup" and answer.route.attempts == 2
    assert fake_upstream.count(v.chat) == 1

    alone = await gateway_for(start_gateway, provider(vendor, fake_upstream, tmp_path))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alone.stub.Complete(pb.CompleteRequest(messages=[ASK], max_tokens=20))
    error = caught.value
    found = details_of(error)
    assert found.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert found.info is not None and found.info.metadata["attempts"] == f"{vendor}:rate_limited"
    assert found.retry is not None and found.retry.retry_delay.seconds >= 1
    assert found.quota is not None and len(found.quota.violations) == 1
    text = str(error.details()) + repr(error.trailing_metadata())
    assert GEMINI_KEY not in text and aws.SECRET_KEY not in text


def look_at(*urls: str, mime_type: str = "") -> pb.Message:
    images = [pb.Part(image=pb.Image(url=u, mime_type=mime_type)) for u in urls]
    return pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="What is in this?"), *images])


async def test_each_cloud_reads_images_from_its_own_storage_and_only_there(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """An s3:// object goes to Bedrock as an s3Location, a gs:// object to Vertex AI as fileData,
    each with the MIME type its name says (or the caller gave); routing passes over a provider
    that cannot read that kind of URL, whatever its rank, and ListModels says who can."""
    gateway = await gateway_for(
        start_gateway,
        *(provider(v, fake_upstream, tmp_path) for v in ("gemini", "vertex", "bedrock")),
    )

    answer = await gateway.stub.Complete(pb.CompleteRequest(messages=[look_at(S3_CAT)]))
    assert answer.route.provider == "bedrock" and answer.text
    [_, image] = fake_upstream.requests_to("bedrock.converse")[-1].json["messages"][0]["content"]
    assert image == {"image": {"format": "jpeg", "source": {"s3Location": {"uri": S3_CAT}}}}

    stream = gateway.stub.StreamComplete(
        pb.StreamCompleteRequest(messages=[look_at(GS_DOG, mime_type="image/webp")])
    )
    assert [m async for m in stream][-1].route.provider == "vertex"
    [_, part] = fake_upstream.requests_to("vertex.generate")[-1].json["contents"][0]["parts"]
    assert part == {"fileData": {"fileUri": GS_DOG, "mimeType": "image/webp"}}

    answer = await gateway.stub.Complete(pb.CompleteRequest(messages=[look_at(HTTPS_CAT)]))
    assert answer.route.provider == "gemini"  # the first rank takes https URLs
    assert fake_upstream.count("gemini.generate") == 1

    listed = await model_service_pb2_grpc.ModelServiceStub(gateway.channel).ListModels(
        model_service_pb2.ListModelsRequest()
    )
    [chat] = [m for m in listed.models if m.name == "chat"]
    able = {r.provider: r.capabilities for r in chat.routes}
    assert {
        name: (can.image_urls, can.image_s3_uris, can.image_gs_uris) for name, can in able.items()
    } == {
        "gemini": (True, False, False),
        "vertex": (True, False, True),
        "bedrock": (False, True, False),
    }  # fmt: skip


async def test_the_http_door_takes_an_object_uri_as_an_image_url(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    gateway = await gateway_for(
        start_gateway,
        provider("gemini", fake_upstream, tmp_path),
        provider("bedrock", fake_upstream, tmp_path),
        openai_http={"enabled": True, "address": "127.0.0.1:0"},
    )
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.app.openai_http.port}/v1",
        api_key="unused",
        max_retries=0,
    ) as client:
        answer = await client.chat.completions.create(
            model="chat",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this?"},
                        {"type": "image_url", "image_url": {"url": S3_CAT}},
                    ],
                }
            ],
        )
    assert answer.choices[0].message.content
    assert fake_upstream.count("gemini.generate") == 0
    [_, image] = fake_upstream.requests_to("bedrock.converse")[-1].json["messages"][0]["content"]
    assert image["image"]["source"] == {"s3Location": {"uri": S3_CAT}}


async def test_an_image_no_provider_can_read_is_failed_precondition_naming_the_capability(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    gateway = await gateway_for(start_gateway, provider("gemini", fake_upstream, tmp_path))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(pb.CompleteRequest(messages=[look_at(S3_CAT)]))
    got = details_of(caught.value)
    assert got.code is grpc.StatusCode.FAILED_PRECONDITION
    assert got.info is not None and got.info.reason == "CAPABILITY_MISSING"
    assert got.info.metadata["capability"] == "image_s3_uris"
    assert got.retry is None
    assert fake_upstream.count("gemini.generate") == 0

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a name that says no type, none given
        await gateway.stub.Complete(pb.CompleteRequest(messages=[look_at("gs://bucket/scan")]))
    got = details_of(caught.value)
    assert got.code is grpc.StatusCode.INVALID_ARGUMENT
    assert got.violated_fields == ["messages[0].parts[1].image"]
    assert got.bad_request is not None
    assert "mime_type" in got.bad_request.field_violations[0].description


S3_CAT = "s3://team-images/cats/tabby.JPG"
GS_DOG = "gs://team_images/dogs/corgi"
HTTPS_CAT = "https://example.com/cat.png"
