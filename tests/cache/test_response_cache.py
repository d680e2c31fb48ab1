"""The response cache on the one call path, against a real gateway and the fake upstream: what
it keys on (two keys never share an entry unless their team or the config says so), what it
stores (deterministic requests by default; a stream only when it ended whole), what a hit
replays (a stream's chunks with their boundaries; either form serves either kind of call), what
the caller decides (cache-control), and what every answer says (x-hapax-cache, age,
Route.cached)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from tests.admission.conftest import NARROW_KEY, OPS_KEY, SEARCH_KEY, bearer, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import Call, FakeUpstream, Hang, Reply
from tests.support.status_details import details_of

CHAT = "openai.chat"


def settings(
    fake: FakeUpstream,
    tmp_path: Path,
    cache: dict[str, Any] | None = None,
    **more: Any,
) -> Any:
    provider = {
        "name": "up",
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"*": "gpt-test"},
    }
    more.setdefault("auth", {"keys": keys(ops={"owner": "search-team"})})
    return make_settings(
        providers=[provider],
        prices={"models": {"gpt-test": {"prompt": "1000", "completion": "1000"}}},
        ledger={"path": str(tmp_path / "usage.db"), "flush_interval": "50ms"},
        cache=cache if cache is not None else {"models": {"*": {}}},
        openai_http={"enabled": True, "address": "127.0.0.1:0"},
        router={"retry": {"max_attempts": 1}},
        **more,
    )


def ask(prompt: str = "what is two and two?", **fields: Any) -> pb.CompleteRequest:
    fields.setdefault("temperature", 0.0)
    return pb.CompleteRequest(prompt=prompt, **fields)


async def complete(
    gateway: Gateway,
    request: pb.CompleteRequest | None = None,
    key: str = SEARCH_KEY,
    control: str = "",
) -> tuple[pb.CompleteResponse, dict[str, str]]:
    metadata = bearer(key) + ((("cache-control", control),) if control else ())
    call = gateway.stub.Complete(request or ask(), metadata=metadata)
    response = await call
    return response, dict(await call.trailing_metadata())


async def stream(
    gateway: Gateway, prompt: str = "what is two and two?", key: str = SEARCH_KEY, **fields: Any
) -> tuple[list[pb.StreamCompleteResponse], dict[str, str]]:
    fields.setdefault("temperature", 0.0)
    request = pb.StreamCompleteRequest(prompt=prompt, **fields)
    call = gateway.stub.StreamComplete(request, metadata=bearer(key))
    messages = [m async for m in call]
    return messages, dict(await call.trailing_metadata())


def pieces(messages: list[pb.StreamCompleteResponse]) -> list[tuple[Any, ...]]:
    """Each message's content with its boundaries (ids differ by call, and are left out)."""
    return [
        (
            m.delta,
            m.reasoning_delta,
            tuple((t.index, t.id, t.name, t.arguments) for t in m.tool_calls),
            m.finish_reason,
            (m.usage.prompt_tokens, m.usage.completion_tokens) if m.HasField("usage") else None,
        )
        for m in messages
    ]


async def test_a_repeated_request_is_answered_from_the_cache_and_says_so(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(text="four", prompt_tokens=7, completion_tokens=1))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    first, said = await complete(gateway)
    assert said["x-hapax-cache"] == "miss" and "age" not in said
    assert not first.route.cached and first.route.attempts == 1
    await gateway.app.generations.current.cache.state.drain()
    second, said = await complete(gateway)
    assert said["x-hapax-cache"] == "hit" and int(said["age"]) >= 0
    assert second.text == "four" and second.route.cached and second.route.attempts == 0
    assert second.route.provider == "up" and second.route.upstream_model == "gpt-test"
    # Usage reports the original tokens; the hit itself costs nothing.
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (7, 1)
    assert second.usage.cost.nanos == 0 and first.usage.cost.nanos == 8_000_000
    assert fake_upstream.count(CHAT) == 1


async def test_two_keys_asking_the_same_question_never_share_an_entry(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    await complete(gateway, key=SEARCH_KEY)
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway, key=NARROW_KEY, request=ask(model="chat-x"))
    _, said = await complete(gateway, key=OPS_KEY)
    assert said["x-hapax-cache"] == "miss"  # ops is another key, of the same owner
    assert fake_upstream.count(CHAT) == 3
    _, said = await complete(gateway, key=SEARCH_KEY)
    assert said["x-hapax-cache"] == "hit"


@pytest.mark.parametrize(("scope", "shared"), [("team", True), ("global", True), ("key", False)])
async def test_a_team_or_global_scope_shares_entries_as_the_config_says(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    scope: str,
    shared: bool,
) -> None:
    cache = {"models": {"*": {"scope": scope}}}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, cache))
    await complete(gateway, key=SEARCH_KEY)  # owner search-team
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway, key=OPS_KEY)  # owner search-team too
    assert said["x-hapax-cache"] == ("hit" if shared else "miss")
    _, said = await complete(gateway, key=NARROW_KEY, request=ask(model="chat-x"))
    assert said["x-hapax-cache"] == "miss"  # another model: another entry, whatever the scope


async def test_sampled_requests_bypass_the_cache_unless_the_config_allows_them(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    for _ in range(2):
        _, said = await complete(gateway, pb.CompleteRequest(prompt="a poem"))  # no temperature
        assert said["x-hapax-cache"] == "bypass"
    assert fake_upstream.count(CHAT) == 2
    _, said = await complete(gateway, pb.CompleteRequest(prompt="a poem", seed=7))
    assert said["x-hapax-cache"] == "miss"
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway, pb.CompleteRequest(prompt="a poem", seed=7))
    assert said["x-hapax-cache"] == "hit"  # a seed asks for one answer
    sampled = await start_gateway(
        settings(fake_upstream, tmp_path, {"models": {"*": {}}, "sampled": True})
    )
    await complete(sampled, pb.CompleteRequest(prompt="a poem"))
    await sampled.app.generations.current.cache.state.drain()
    _, said = await complete(sampled, pb.CompleteRequest(prompt="a poem"))
    assert said["x-hapax-cache"] == "hit"


async def test_only_the_models_and_keys_the_config_names_use_the_cache(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    cache = {"models": {"default": {}}, "keys": ["ops"]}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, cache))
    told = []
    for key in (SEARCH_KEY, SEARCH_KEY, OPS_KEY, OPS_KEY):
        _, said = await complete(gateway, key=key)
        told.append(said.get("x-hapax-cache"))
        await gateway.app.generations.current.cache.state.drain()
    assert told == [None, None, "miss", "hit"]  # search does not use the cache: nothing said
    _, said = await complete(gateway, ask(model="chat-x"), key=OPS_KEY)
    assert "x-hapax-cache" not in said  # a model the cache does not name
    assert fake_upstream.count(CHAT) == 4  # search twice, ops once, chat-x once


async def test_cache_control_no_cache_refreshes_no_store_bypasses_and_max_age_bounds(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    drain = gateway.app.generations.current.cache.state.drain
    fake_upstream.set_default(Reply(text="old"))
    await complete(gateway)
    await drain()
    fake_upstream.set_default(Reply(text="new"))
    answer, said = await complete(gateway, control="no-store")
    assert (answer.text, said["x-hapax-cache"]) == ("new", "bypass")
    await drain()
    answer, said = await complete(gateway)
    assert (answer.text, said["x-hapax-cache"]) == ("old", "hit")  # no-store wrote nothing
    answer, said = await complete(gateway, control="no-cache")
    assert (answer.text, said["x-hapax-cache"]) == ("new", "refresh")
    await drain()
    answer, said = await complete(gateway)
    assert (answer.text, said["x-hapax-cache"]) == ("new", "hit")  # refreshed
    await asyncio.sleep(1.1)  # the entry is at least a second old
    answer, said = await complete(gateway, control="max-age=0")
    assert said["x-hapax-cache"] == "miss" and fake_upstream.count(CHAT) == 4
    answer, said = await complete(gateway, control="max-age=3600")
    assert said["x-hapax-cache"] == "hit"


async def test_only_if_cached_fails_recognisably_on_a_miss(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(gateway, control="only-if-cached")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info = details_of(caught.value).info
    assert info is not None and info.reason == "CACHE_MISS"
    assert fake_upstream.count(CHAT) == 0
    await complete(gateway)
    await gateway.app.generations.current.cache.state.drain()
    _, said = await complete(gateway, control="only-if-cached")
    assert said["x-hapax-cache"] == "hit"
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    body = {"model": "default", "messages": [{"role": "user", "content": "new"}], "temperature": 0}
    headers = {"authorization": f"Bearer {SEARCH_KEY}", "cache-control": "only-if-cached"}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as got:
        assert got.status == 504
        assert (await got.json())["error"]["code"] == "cache_miss"


async def test_a_key_that_may_not_bypass_has_no_cache_and_no_store_ignored(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    auth = {"keys": keys(search={"cache_bypass": False})}
    gateway = await start_gateway(settings(fake_upstream, tmp_path, auth=auth))
    await complete(gateway)
    await gateway.app.generations.current.cache.state.drain()
    for control in ("no-cache", "no-store", "no-cache, no-store"):
        _, said = await complete(gateway, control=control)
        assert said["x-hapax-cache"] == "hit"
    assert fake_upstream.count(CHAT) == 1


async def test_a_hit_on_a_stream_replays_its_chunks_with_their_boundaries(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(
        Reply(
            text="the answer is four",
            chunks=4,
            reasoning="two and two",
            tool_calls=(Call(arguments='{"city": "Oslo", "days": 2}'),),
            finish="tool_calls",
        )
    )
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    original, said = await stream(gateway)
    assert said["x-hapax-cache"] == "miss"
    await gateway.app.generations.current.cache.state.drain()
    replayed, said = await stream(gateway)
    assert said["x-hapax-cache"] == "hit"
    assert pieces(replayed) == pieces(original)
    assert len(replayed) > 4  # one message per chunk, as the original came
    assert replayed[-1].route.cached and not original[-1].route.cached
    assert fake_upstream.count(CHAT) == 1


async def test_an_interrupted_stream_is_not_cached(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    fake_upstream.set_default(Reply(text="abcdefgh", chunks=4, drop_after=2))
    with pytest.raises(grpc.aio.AioRpcError):
        await stream(gateway)
    fake_upstream.set_default(Reply(text="abcdefgh", chunks=4, error_after=2))
    with pytest.raises(grpc.aio.AioRpcError):
        await stream(gateway)
    # a stream the caller left after its first chunk
    fake_upstream.set_default(Reply(text="abcdefgh", chunks=4, pause_after=1))
    fake_upstream.disconnected.clear()  # the streams above may have set it
    call = gateway.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="what is two and two?", temperature=0.0),
        metadata=bearer(SEARCH_KEY),
    )
    await call.read()
    call.cancel()
    # the gateway has cut the upstream call off (the fake's pause holds the rest until then; a
    # stream whose rest arrived before the cancel did is whole, and may be stored)
    await asyncio.wait_for(fake_upstream.disconnected.wait(), 5)
    fake_upstream.release()
    await gateway.app.generations.current.cache.state.drain()
    fake_upstream.set_default(Reply(text="whole"))
    messages, said = await stream(gateway)
    assert said["x-hapax-cache"] == "miss"
    assert "".join(m.delta for m in messages) == "whole"


async def test_a_unary_answer_serves_a_stream_and_a_stream_serves_a_unary_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(text="four", tool_calls=(Call(),), finish="tool_calls"))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    drain = gateway.app.generations.current.cache.state.drain
    unary, _ = await complete(gateway, ask("first"))
    await drain()
    messages, said = await stream(gateway, "first")
    assert said["x-hapax-cache"] == "hit"
    assert "".join(m.delta for m in messages) == unary.text == "four"
    calls = [t for m in messages for t in m.tool_calls]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        (c.id, c.name, c.arguments) for c in unary.tool_calls
    ]
    assert messages[-1].finish_reason == unary.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    original, _ = await stream(gateway, "second")
    await drain()
    answer, said = await complete(gateway, ask("second"))
    assert said["x-hapax-cache"] == "hit"
    assert answer.text == "".join(m.delta for m in original)
    assert [(c.id, c.name) for c in answer.tool_calls] == [("call_fake_1", "get_weather")]
    assert answer.tool_calls[0].arguments == '{"city": "Oslo"}'
    assert fake_upstream.count(CHAT) == 2


async def test_a_burst_of_identical_misses_makes_one_upstream_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Hang(seconds=0.3, then=Reply(text="four")))
    cache = {"models": {"*": {}}}
    gateway = await start_gateway(
        settings(fake_upstream, tmp_path, cache, dedup={"enabled": False})
    )
    answers = await asyncio.gather(*(complete(gateway) for _ in range(8)))
    assert {a.text for a, _ in answers} == {"four"}
    assert fake_upstream.count(CHAT) == 1


async def test_the_http_door_says_what_the_cache_did_in_its_headers(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    headers = {"authorization": f"Bearer {SEARCH_KEY}"}
    said = []
    async with aiohttp.ClientSession() as http:
        for streaming in (False, False, True):
            sent = {**body, "stream": streaming}
            async with http.post(url, json=sent, headers=headers) as got:
                assert got.status == 200
                await got.read()
                said.append((got.headers.get("x-hapax-cache"), got.headers.get("age")))
            await gateway.app.generations.current.cache.state.drain()
    assert said[0] == ("miss", None)
    assert said[1][0] == "hit" and said[1][1] is not None
    assert said[2][0] == "hit"


async def test_a_hit_counts_nothing_against_rate_limits_or_budgets(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=4, completion_tokens=96))
    auth = {"keys": keys(search={"requests_per_minute": 2})}
    budget = {"name": "b", "key": "search", "tokens": 150, "window": "day"}
    gateway = await start_gateway(
        settings(fake_upstream, tmp_path, auth=auth, budgets={"limits": [budget]})
    )
    await complete(gateway, ask(max_tokens=96))  # 100 tokens spent of 150; 1 request of 2
    await gateway.app.generations.current.cache.state.drain()
    for _ in range(5):  # more than the rate limit and the budget allow
        _, said = await complete(gateway, ask(max_tokens=96))
        assert said["x-hapax-cache"] == "hit"
    status = await gateway.app.generations.current.budgets.status()
    assert [(spent, reserved) for _, _, spent, reserved in status] == [(100, 0)]
    await complete(gateway, ask("another", max_tokens=40))  # the second request of the minute
