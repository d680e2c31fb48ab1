"""The route table: which providers, in which order, serve a logical model."""

from __future__ import annotations

from typing import Any

import pytest

from hapaxd.config import default_settings
from hapaxd.core.errors import ModelNotFound
from hapaxd.core.routes import RouteTable
from tests.conftest import make_settings


def table(**config: Any) -> RouteTable:
    return RouteTable(make_settings(**config))


PROVIDERS = [
    {"name": "a", "type": "local", "models": {"chat": "a-chat", "embed": "a-embed"}},
    {"name": "b", "type": "local", "models": {"chat": "b-chat"}},
    {"name": "any", "type": "local", "models": {"*": "*"}},
]


def test_without_a_preference_every_serving_provider_in_file_order() -> None:
    t = table(providers=PROVIDERS, default_model="chat")
    assert t.ranks("chat") == [[("a", "a-chat")], [("b", "b-chat")], [("any", "chat")]]
    assert t.ranks("embed") == [[("a", "a-embed")], [("any", "embed")]]


def test_a_wildcard_serves_any_name_and_can_rename_it() -> None:
    t = table(
        providers=[{"name": "fixed", "type": "local", "models": {"*": "one-model"}}],
        default_model="x",
    )
    assert t.ranks("anything") == [[("fixed", "one-model")]]


def test_inner_lists_are_ranks_and_a_models_own_list_wins() -> None:
    t = table(
        providers=PROVIDERS,
        default_model="chat",
        provider_preference=[["b", "a"], "any"],
        models={"embed": {"provider_preference": ["any", "a"]}},
    )
    assert t.ranks("chat") == [[("b", "b-chat"), ("a", "a-chat")], [("any", "chat")]]
    assert t.ranks("embed") == [[("any", "embed")], [("a", "a-embed")]]


def test_resolve_fills_the_default_and_refuses_what_nothing_serves() -> None:
    t = table(providers=PROVIDERS[:2], default_model="chat")
    assert t.resolve("") == "chat"
    assert t.resolve("embed") == "embed"
    with pytest.raises(ModelNotFound) as caught:
        t.resolve("nope")
    assert "chat, embed" in caught.value.message


def test_served_pairs_each_named_model_with_its_providers() -> None:
    t = table(providers=PROVIDERS[:2], default_model="chat")
    assert t.served() == [("a", "chat"), ("a", "embed"), ("b", "chat")]
    assert RouteTable(default_settings({})).served() == [("local", "default")]
