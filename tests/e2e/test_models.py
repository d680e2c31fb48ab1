"""ModelService.ListModels: each logical model with its providers in preference order (ranks),
their types and upstream names, and what each can do; filtered to a key's models."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from hapax.v1 import model_service_pb2 as pb
from hapax.v1 import model_service_pb2_grpc
from tests.admission.conftest import NARROW_KEY, bearer, keys
from tests.conftest import StartGateway, make_settings

ALL = {"streaming", "tools", "images", "image_urls", "json_schema", "embeddings"}


def able(capabilities: pb.Capabilities) -> set[str]:
    return {field.name for field, value in capabilities.ListFields() if value}


def providers() -> list[dict[str, Any]]:
    return [
        {
            "name": "openai",
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "models": {"chat": "gpt-4o-mini", "embed": "text-embedding-3-small"},
            "model_capabilities": {"embed": ["embeddings"]},
        },
        {
            "name": "claude",
            "type": "anthropic",
            "models": {"chat": "claude-haiku-4-5", "chat-vision": "claude-sonnet-4-6"},
        },
        {"name": "local", "type": "local", "models": {"*": "local"}, "capabilities": ["streaming"]},
    ]


async def test_list_models_shows_routes_in_order_with_capabilities(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        make_settings(
            providers=providers(),
            provider_preference=[["openai", "claude"], "local"],
            default_model="chat",
            default_embedding_model="embed",
        )
    )
    stub = model_service_pb2_grpc.ModelServiceStub(gateway.channel)

    listing = await stub.ListModels(pb.ListModelsRequest())

    assert (listing.default_model, listing.default_embedding_model) == ("chat", "embed")
    models = {m.name: m for m in listing.models}
    assert list(models) == ["chat", "chat-vision", "embed", "*"]
    chat = models["chat"]
    assert [(r.provider, r.provider_type, r.upstream_model, r.rank) for r in chat.routes] == [
        ("openai", "openai", "gpt-4o-mini", 1),
        ("claude", "anthropic", "claude-haiku-4-5", 1),
        ("local", "local", "local", 2),
    ]
    assert [able(r.capabilities) for r in chat.routes] == [
        ALL,
        ALL - {"embeddings"},
        {"streaming"},
    ]
    assert able(chat.capabilities) == ALL
    assert [(r.provider, able(r.capabilities)) for r in models["embed"].routes] == [
        ("openai", {"embeddings"}),
        ("local", {"streaming"}),
    ]
    assert [r.provider for r in models["*"].routes] == ["local"]


async def test_a_key_sees_only_the_models_it_may_use(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        make_settings(providers=providers(), default_model="chat", auth={"keys": keys()})
    )
    stub = model_service_pb2_grpc.ModelServiceStub(gateway.channel)

    listing = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(NARROW_KEY))

    assert [m.name for m in listing.models] == ["chat-vision"]  # narrow: chat-* only
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModels(pb.ListModelsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
