"""The semantic cache through a real gateway: the request's text embedded by the gateway's own
router (the fake upstream's embeddings endpoint answering deterministic word vectors), a
paraphrase answered from the cache with `x-hapax-cache: hit` and its similarity, and a request
that means the opposite (the same words but one) sent to the provider."""

from __future__ import annotations

from pathlib import Path

from tests.admission.conftest import OPS_KEY
from tests.cache.test_response_cache import CHAT, ask, complete, settings
from tests.conftest import StartGateway
from tests.fakes.upstream import Fail, FakeUpstream, Reply

EMBED = "openai.embeddings"
SEMANTIC = {"models": {"*": {"semantic": {"embedding_model": "embedder"}}}}


async def test_a_paraphrase_is_a_semantic_hit_and_an_opposite_is_not(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(vectors_by="words"), EMBED)
    fake_upstream.set_default(Reply(text="lights are on", prompt_tokens=6, completion_tokens=3))
    gateway = await start_gateway(settings(fake_upstream, tmp_path, SEMANTIC))
    first, said = await complete(gateway, ask("Turn the living room lights on"))
    assert said["x-hapax-cache"] == "miss" and first.text == "lights are on"
    await gateway.app.generations.current.cache.state.drain()

    hit, said = await complete(gateway, ask("Please turn the living room lights on."))
    assert said["x-hapax-cache"] == "hit" and hit.route.cached
    # the texts differ (no exact hit); the fake's word vectors drop filler words and punctuation
    assert 0.95 <= float(said["x-hapax-cache-similarity"]) <= 1.0
    assert hit.text == "lights are on" and hit.usage.cost.nanos == 0
    assert fake_upstream.count(CHAT) == 1

    fake_upstream.set_default(Reply(text="lights are off"))
    opposite, said = await complete(gateway, ask("Turn the living room lights off"))
    assert said["x-hapax-cache"] == "miss" and "x-hapax-cache-similarity" not in said
    assert opposite.text == "lights are off" and fake_upstream.count(CHAT) == 2
    assert fake_upstream.count(EMBED) == 3  # each request's text embedded once


async def test_another_key_never_gets_a_semantic_hit(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(vectors_by="words"), EMBED)
    gateway = await start_gateway(settings(fake_upstream, tmp_path, SEMANTIC))
    await complete(gateway, ask("Turn the living room lights on"))
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway, ask("Turn the living room lights on"), key=OPS_KEY)
    assert said["x-hapax-cache"] == "miss"
    assert fake_upstream.count(CHAT) == 2


async def test_when_the_embedding_fails_the_call_is_a_miss_not_an_error(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Fail(400), EMBED)
    gateway = await start_gateway(settings(fake_upstream, tmp_path, SEMANTIC))
    answer, said = await complete(gateway, ask("Turn the living room lights on"))
    assert answer.text and said["x-hapax-cache"] == "miss"
    await gateway.app.generations.current.cache.state.drain()
    answer, said = await complete(gateway, ask("Turn the living room lights on"))
    assert answer.text and said["x-hapax-cache"] == "hit"  # the exact cache needs no vector
    answer, said = await complete(gateway, ask("Please turn the living room lights on."))
    assert answer.text and said["x-hapax-cache"] == "miss"
    assert fake_upstream.count(CHAT) == 2 and fake_upstream.count(EMBED) >= 2
