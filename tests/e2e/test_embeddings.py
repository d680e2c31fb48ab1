"""EmbeddingService.Embed end to end: a real gRPC channel, the fake upstream speaking OpenAI's,
Azure's and Ollama's embeddings wire (bodies judged by their SDK types), the local provider's
deterministic vectors, and the same router, breakers, failover and dedup as completions."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
import openai
import pytest

from hapax.v1 import embedding_service_pb2 as pb
from hapax.v1 import embedding_service_pb2_grpc
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.fakes.upstream.wire import fake_vector
from tests.support.status_details import details_of

VENDORS = {  # provider type -> (fake vendor, fake route)
    "openai": ("openai", "openai.embeddings"),
    "azure_openai": ("azure", "azure.embeddings"),
    "ollama": ("ollama", "ollama.embed"),
}


def provider(kind: str, fake: FakeUpstream, name: str = "", **extra: Any) -> dict[str, Any]:
    wire = VENDORS[kind][0] if kind in VENDORS else kind
    return {
        "name": name or kind.replace("_", "-"),
        "type": kind,
        "base_url": fake.base_url(wire),
        "models": {"embed": "embed-model"},
        **extra,
    }


async def embedder(start: StartGateway, *providers: dict[str, Any], **extra: Any) -> Any:
    gateway = await start(
        make_settings(
            providers=list(providers),
            default_model="embed",
            router={"retry": {"max_attempts": 1}},
            **extra,
        )
    )
    return embedding_service_pb2_grpc.EmbeddingServiceStub(gateway.channel), gateway


@pytest.mark.parametrize("kind", list(VENDORS))
async def test_each_vendor_embeds_a_batch_in_order(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, kind: str
) -> None:
    stub, _ = await embedder(start_gateway, provider(kind, fake_upstream))

    response = await stub.Embed(
        pb.EmbedRequest(model="embed", inputs=["hi", "hello"], dimensions=4)
    )

    assert [list(e.values) for e in response.embeddings] == [
        fake_vector("hi", 0, 4),
        fake_vector("hello", 1, 4),
    ]
    assert [e.index for e in response.embeddings] == [0, 1]
    assert response.usage.prompt_tokens == 11 and response.route.provider == kind.replace("_", "-")
    assert response.model == "embed" and response.id
    body = fake_upstream.requests_to(VENDORS[kind][1])[-1].json
    assert body["input"] == ["hi", "hello"] and body["dimensions"] == 4
    if kind != "ollama":
        assert body["encoding_format"] == "float"


async def test_the_local_provider_embeds_deterministically(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()  # the built-in local provider
    stub = embedding_service_pb2_grpc.EmbeddingServiceStub(gateway.channel)

    first = await stub.Embed(pb.EmbedRequest(inputs=["same", "other"]))
    again = await stub.Embed(pb.EmbedRequest(inputs=["same"], dimensions=16))
    short = await stub.Embed(pb.EmbedRequest(inputs=["same"], dimensions=3))

    same, other = (list(e.values) for e in first.embeddings)
    assert len(same) == 16 and same != other
    assert list(again.embeddings[0].values) == same
    assert math.isclose(math.sqrt(sum(v * v for v in same)), 1.0, rel_tol=1e-5)
    assert len(short.embeddings[0].values) == 3
    assert first.route.provider == "local"


async def test_embeddings_fail_over_and_skip_providers_that_cannot_embed(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    stub, _ = await embedder(
        start_gateway,
        {**provider("anthropic", fake_upstream), "models": {"embed": "claude"}},
        provider("openai", fake_upstream),
        provider("ollama", fake_upstream),
    )
    fake_upstream.script("openai.embeddings", Fail(503))

    response = await stub.Embed(pb.EmbedRequest(model="embed", inputs=["x"]))

    assert response.route.provider == "ollama" and response.route.attempts == 2
    assert fake_upstream.count("anthropic.messages") == 0  # not able: never asked
    assert [r.route for r in fake_upstream.requests] == ["openai.embeddings", "ollama.embed"]


@pytest.mark.parametrize("door", ["grpc", "http"])
async def test_a_wrong_vector_count_fails_over_and_counts_against_the_provider(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, door: str
) -> None:
    stub, gateway = await embedder(
        start_gateway,
        provider("openai", fake_upstream),
        provider("ollama", fake_upstream),
        circuit_breaker={"failure_threshold": 1},
        openai_http={"enabled": True, "address": "127.0.0.1:0"},
    )
    fake_upstream.set_default(Reply(vectors=1), "openai.embeddings")  # one vector, any batch

    async def embed(texts: list[str]) -> list[list[float]]:
        if door == "grpc":
            answer = await stub.Embed(pb.EmbedRequest(model="embed", inputs=texts, dimensions=4))
            assert answer.route.provider == "ollama"
            return [list(e.values) for e in answer.embeddings]
        assert gateway.app.openai_http is not None
        port = gateway.app.openai_http.port
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
        ) as sdk:
            found = await sdk.embeddings.create(
                model="embed", input=texts, dimensions=4, encoding_format="float"
            )
        return [d.embedding for d in found.data]

    assert await embed(["hi", "hello"]) == [fake_vector("hi", 0, 4), fake_vector("hello", 1, 4)]
    assert [r.route for r in fake_upstream.requests] == ["openai.embeddings", "ollama.embed"]
    # The wrong count was openai's failure: its breaker is open, the next batch skips it.
    assert await embed(["again", "twice"]) == [
        fake_vector("again", 0, 4),
        fake_vector("twice", 1, 4),
    ]
    assert (fake_upstream.count("openai.embeddings"), fake_upstream.count("ollama.embed")) == (1, 2)


async def test_a_model_no_provider_can_embed_is_failed_precondition(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    stub, _ = await embedder(
        start_gateway, {**provider("anthropic", fake_upstream), "models": {"embed": "c"}}
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model="embed", inputs=["x"]))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.info is not None and details.info.metadata["capability"] == "embeddings"


async def test_identical_batches_in_flight_share_one_upstream_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    stub, _ = await embedder(
        start_gateway, provider("openai", fake_upstream), dedup={"share_across_callers": True}
    )
    fake_upstream.hold()
    calls = [
        asyncio.ensure_future(stub.Embed(pb.EmbedRequest(inputs=["a", "b"]))) for _ in range(3)
    ]
    other = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(inputs=["a", "c"])))
    await fake_upstream.wait_for_requests(2)
    await asyncio.sleep(0.1)
    fake_upstream.release()
    answers = await asyncio.gather(*calls, other)

    assert fake_upstream.count("openai.embeddings") == 2
    assert sorted(a.route.shared for a in answers[:3]) == [False, True, True]
    assert not answers[3].route.shared
    assert answers[0].embeddings == answers[1].embeddings == answers[2].embeddings


async def test_an_empty_model_uses_the_default_embedding_model(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    stub, _ = await embedder(
        start_gateway,
        {**provider("openai", fake_upstream), "models": {"embed": "embed-model", "chat": "gpt"}},
        default_embedding_model="embed",
    )
    response = await stub.Embed(pb.EmbedRequest(inputs=["x"]))
    assert (response.model, response.route.upstream_model) == ("embed", "embed-model")


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ["inputs"]),
        ({"inputs": ["a", ""]}, ["inputs[1]"]),
        ({"inputs": ["a"], "dimensions": 0}, ["dimensions"]),
        ({"inputs": ["x" * 3000]}, ["inputs"]),
    ],
    ids=["none", "empty-text", "dimensions", "too-long"],
)
async def test_bad_batches_are_invalid_argument_with_violations(
    start_gateway: StartGateway, fields: dict[str, Any], violations: list[str]
) -> None:
    gateway = await start_gateway(make_settings(server={"max_content_chars": 2000}))
    stub = embedding_service_pb2_grpc.EmbeddingServiceStub(gateway.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(**fields))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violated_fields == violations
