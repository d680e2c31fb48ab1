"""The response cache's parts on their own: the cache key (everything that shapes an answer and
the scope, nothing else), cache-control parsing, entries (encoding, either form from either),
and the in-process store's byte bound, LRU order and time to live."""

from __future__ import annotations

import dataclasses

import pytest

from hapaxd.admission.keys import Caller
from hapaxd.cache import control, entries
from hapaxd.cache.entries import EntryError
from hapaxd.cache.keys import cache_key, scope_of
from hapaxd.cache.memory_store import MemoryStore
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    FinishReason,
    FormatType,
    Image,
    Json,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
)
from tests.support.clock import Clock

BASE = CompletionRequest(
    model="chat",
    messages=(Message(Role.SYSTEM, "be brief"), Message(Role.USER, "two and two?")),
    temperature=0.0,
)

# One change to each thing that shapes an answer: each must change the key.
CHANGES = {
    "model": {"model": "other"},
    "message text": {"messages": (Message(Role.SYSTEM, "be brief"), Message(Role.USER, "2+2?"))},
    "role": {"messages": (Message(Role.USER, "be brief"), Message(Role.USER, "two and two?"))},
    "image bytes": {
        "messages": (
            Message(Role.USER, "what is it?", parts=("what is it?", Image(data=b"\x89PNG1"))),
        )
    },
    "tool call": {
        "messages": (
            Message(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "f", "{}"),)),
            Message(Role.TOOL, "42", tool_call_id="c1"),
        )
    },
    "max_tokens": {"max_tokens": 10},
    "temperature": {"temperature": 0.5},
    "top_p": {"top_p": 0.9},
    "stop": {"stop": ("\n",)},
    "user": {"user": "end-user-7"},
    "tools": {"tools": (Tool("f", "a function", Json({"type": "object"})),)},
    "tool choice": {"tool_choice": ToolChoice(ToolMode.REQUIRED)},
    "parallel tool calls": {"parallel_tool_calls": False},
    "response format": {"response_format": ResponseFormat(FormatType.JSON_OBJECT)},
    "seed": {"seed": 1},
    "presence penalty": {"presence_penalty": 0.1},
    "frequency penalty": {"frequency_penalty": 0.1},
    "vendor options": {"vendor_options": (("openai", Json({"logprobs": True})),)},
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_everything_that_shapes_an_answer_changes_the_key(what: str) -> None:
    changed = dataclasses.replace(BASE, **CHANGES[what])
    assert cache_key(changed, "key:a") != cache_key(BASE, "key:a")


def test_the_request_id_and_metadata_do_not_change_the_key_and_the_scope_does() -> None:
    tagged = dataclasses.replace(BASE, request_id="r-1", metadata={"tenant": "x"})
    assert cache_key(tagged, "key:a") == cache_key(BASE, "key:a")
    assert cache_key(BASE, "key:a") != cache_key(BASE, "key:b")
    assert cache_key(BASE, "key:a") != cache_key(BASE, "global")
    assert len(cache_key(BASE, "global")) == 64  # hex SHA-256


def test_two_images_with_other_bytes_give_other_keys() -> None:
    def with_image(data: bytes) -> CompletionRequest:
        part = Image(data=data, mime_type="image/png")
        return dataclasses.replace(
            BASE, messages=(Message(Role.USER, "what is it?", parts=("what is it?", part)),)
        )

    assert cache_key(with_image(b"a"), "s") != cache_key(with_image(b"b"), "s")
    assert cache_key(with_image(b"a"), "s") == cache_key(with_image(b"a"), "s")


def test_scopes() -> None:
    search = Caller("search", team="search-team")
    lone = Caller("lone")
    assert scope_of(search, "key") == "key:search"
    assert scope_of(search, "team") == "team:search-team"
    assert scope_of(lone, "team") == "key:lone"  # no owner: its own
    assert scope_of(search, "global") == scope_of(None, "global") == "global"
    assert scope_of(None, "key") == "anonymous"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", control.Directives()),
        ("no-cache", control.Directives(no_cache=True)),
        ("No-Store", control.Directives(no_store=True)),
        ("max-age=60, only-if-cached", control.Directives(max_age=60, only_if_cached=True)),
        ('max-age="5"', control.Directives(max_age=5)),
        ("max-age=10, max-age=3", control.Directives(max_age=3)),
        ("max-age=-1, max-age=abc, private, no-transform", control.Directives()),
        ("no-cache,no-store", control.Directives(no_cache=True, no_store=True)),
    ],
)
def test_cache_control_directives(value: str, expected: control.Directives) -> None:
    assert control.parse(value) == expected


def stream_entry() -> entries.Entry:
    chunks = [
        Chunk(reasoning="think "),
        Chunk(delta="the "),
        Chunk(delta="answer", tool_calls=(ToolCallDelta(0, "c1", "f", '{"a"'),)),
        Chunk(tool_calls=(ToolCallDelta(0, arguments=": 1}"),), finish_reason=FinishReason.STOP),
    ]
    usage = Usage(3, 4, 1, 2)
    return entries.of_stream(chunks, usage, "up", "gpt-test", 1234, 1_700_000_000.5)


def test_an_entry_round_trips_through_its_encoding() -> None:
    entry = stream_entry()
    assert entries.decode(entries.encode(entry)) == entry
    assert entry.usage == Usage(3, 4, 1, 2) and entry.finish is FinishReason.STOP


def test_a_stream_entry_is_one_completion_and_a_completion_one_chunk() -> None:
    completion = stream_entry().completion()
    assert completion == Completion(
        text="the answer",
        finish_reason=FinishReason.STOP,
        usage=Usage(3, 4, 1, 2),
        upstream_model="gpt-test",
        tool_calls=(ToolCall("c1", "f", '{"a": 1}'),),
        reasoning="think ",
    )
    entry = entries.of_completion(completion, "up", None, 5.0)
    assert len(entry.chunks) == 1 and entry.completion() == completion
    assert entries.decode(entries.encode(entry)).cost_nanos is None


@pytest.mark.parametrize(
    "data", [b"", b"not json", b'{"f": 99, "k": []}', b'{"f": 1, "k": [[1]]}', b"[]"]
)
def test_bytes_that_are_not_an_entry_are_an_entry_error(data: bytes) -> None:
    with pytest.raises(EntryError):
        entries.decode(data)


async def test_the_in_process_store_evicts_the_least_recently_used_past_its_bound() -> None:
    evicted: list[tuple[int, int]] = []
    store = MemoryStore(300, on_evict=lambda n, held: evicted.append((n, held)))
    entry = stream_entry()
    for name in "abc":
        await store.put(name, entry, name.encode() * 100, ttl=60)
    assert store.held == 300 and evicted == []
    assert await store.get("a") is entry  # kept decoded; a is now the most recently used
    await store.put("d", entry, b"d" * 100, ttl=60)
    assert evicted == [(1, 300)]
    assert await store.get("b") is None  # b was the least recently used
    assert await store.get("a") is not None and await store.get("c") is not None
    await store.put("big", entry, b"x" * 250, ttl=60)
    assert store.held <= 300 and len(store) == 1 and evicted[-1] == (3, 250)
    await store.put("huge", entry, b"x" * 301, ttl=60)  # bigger than the whole bound: not kept
    assert await store.get("huge") is None and await store.get("big") is not None


async def test_the_in_process_store_drops_an_entry_past_its_time_to_live() -> None:
    clock = Clock()
    store = MemoryStore(1000, clock=clock)
    entry = stream_entry()
    await store.put("a", entry, b"x", ttl=10)
    clock.now += 9.9
    assert await store.get("a") is entry
    clock.now += 0.2
    assert await store.get("a") is None and store.held == 0


def test_a_completion_is_made_once_per_entry_and_equals_the_decoded_ones() -> None:
    entry = stream_entry()
    first = entry.completion()
    assert entry.completion() is first
    assert entries.decode(entries.encode(entry)).completion() == first
    unary = entries.of_completion(first, "up", 7, 5.0)
    assert unary.completion() is first
    assert entries.decode(entries.encode(unary)).completion() == first
