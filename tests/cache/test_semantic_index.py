"""The semantic cache's index and guards (hapaxd/cache/semantic.py): what is embedded, which
terms two texts must share, the index's isolation by scope, settings and guards, its size bound,
and the false-hit set (semantic_pairs.yaml) embedded by the fake upstream's word vectors."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import random
from typing import Any

import aiohttp
import pytest
import yaml

from hapaxd.cache.semantic import SemanticIndex, guard_terms, semantic_text
from hapaxd.core.types import Message, Role, ToolCall
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fakes.upstream.wire import fake_vector, word_vector

THRESHOLD = 0.95  # SemanticCacheSettings' default
DIMS = 512
PAIRS = yaml.safe_load((pathlib.Path(__file__).parent / "semantic_pairs.yaml").read_text())


# --- what is embedded ----------------------------------------------------------------------------


CONVERSATION = [
    Message(Role.SYSTEM, "Be brief."),
    Message(Role.USER, "Weather in Oslo?"),
    Message(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "weather", '{"city":"Oslo"}'),)),
    Message(Role.TOOL, "4 degrees", tool_call_id="c1"),
    Message(Role.ASSISTANT, "It is 4 degrees."),
    Message(Role.USER, "And tomorrow?"),
]


def test_the_last_user_turn_or_the_whole_conversation_is_embedded() -> None:
    assert semantic_text(CONVERSATION, "last_user") == "And tomorrow?"
    assert semantic_text(CONVERSATION, "conversation") == (
        "system: Be brief.\n"
        "user: Weather in Oslo?\n"
        'assistant: call weather({"city":"Oslo"})\n'
        "tool: 4 degrees\n"
        "assistant: It is 4 degrees.\n"
        "user: And tomorrow?"
    )
    assert semantic_text([Message(Role.SYSTEM, "Be brief.")], "last_user") == ""
    with pytest.raises(ValueError):
        semantic_text(CONVERSATION, "everything")


# --- guard terms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Turn the alarm on", ("on",)),
        ("turn the alarm off", ("off",)),
        ("Transfer 100 to Bob.", ("100", "bob")),
        ("How far is 5 km?", ("5 km",)),
        ("It's 10% off", ("10 %", "off")),
        ("Send $5 to Dr. Smith", ("5 usd", "dr", "smith")),
        ("What's 20°C in Fahrenheit?", ("20 c", "f")),
        ("Use gpt-4o, not GPT-4", ("gpt-4o", "not", "gpt-4")),
        ("Flights from Oslo to Paris on Monday", ("from", "oslo", "paris", "on", "monday")),
        ("Bob's car is red", ()),  # a name that starts a sentence is not read as one
        ("I think so", ()),
        ("Summarise this article", ()),
    ],
)
def test_guard_terms(text: str, terms: tuple[str, ...]) -> None:
    assert guard_terms(text) == terms


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("how far is 5 km", "how far is 5km"),
        ("how far is 5 km", "how far is 5 kilometres"),
        ("10%", "ten per cent"),
        ("$5", "5 dollars"),
        ("2.50 EUR", "€2.5"),
        ("1,000 users", "1000 users"),
        ("I don't like it", "I do not like it"),
        ("I can't", "I cannot"),
        ("meet at 3pm", "meet at 3 p.m."),
        ("20 degrees celsius", "20°C"),
        ("The first item", "the 1st item"),
        ("When does it begin?", "when does it start"),
        ("Tell me about Paris", "tell me about Paris, please!"),
    ],
)
def test_the_same_terms_written_differently(a: str, b: str) -> None:
    assert guard_terms(a) == guard_terms(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("turn the alarm on", "turn the alarm off"),
        ("transfer 100 to Bob", "transfer 100 to Alice"),
        ("5 km", "5 miles"),
        ("5 km", "50 km"),
        ("is 3 more than 5", "is 5 more than 3"),  # the same terms, in another order
        ("from Oslo to Paris", "to Oslo from Paris"),
        ("do it", "don't do it"),
        ("$5", "€5"),
        ("enable it", "disable it"),
        ("yes", "no"),
        ("true", "false"),
        ("the minimum", "the maximum"),
        ("above zero", "below zero"),
        ("more", "less"),
        ("before lunch", "after lunch"),
        ("open the door", "close the door"),
        ("increase it", "decrease it"),
        ("today", "tomorrow"),
        ("tea or coffee", "tea and coffee"),
    ],
)
def test_terms_that_tell_texts_apart(a: str, b: str) -> None:
    assert guard_terms(a) != guard_terms(b)


# --- the index -----------------------------------------------------------------------------------


def test_the_nearest_at_or_above_the_threshold() -> None:
    index = SemanticIndex(10)
    index.add("s", "shape", [1.0, 0.0, 0.0], (), "east")
    index.add("s", "shape", [0.0, 1.0, 0.0], (), "north")

    key, similarity = index.nearest("s", "shape", [1.0, 0.1, 0.0], (), 0.9) or ("", 0.0)
    assert key == "east" and similarity == pytest.approx(1 / math.sqrt(1.01))
    assert index.nearest("s", "shape", [1.0, 0.1, 0.0], (), 0.999) is None
    # At the threshold exactly counts; vectors are scaled first, so length does not matter.
    assert index.nearest("s", "shape", [0.0, 7.0, 7.0], (), math.sqrt(0.5)) == (
        "north",
        pytest.approx(math.sqrt(0.5)),
    )
    assert index.nearest("s", "shape", [0.0, 5.0, 0.0], (), 1.0) == ("north", 1.0)


def test_only_the_same_scope_shape_guards_and_length_are_compared() -> None:
    index = SemanticIndex(10)
    index.add("key:a", "model=x", [1.0, 0.0], ("5 km",), "entry")

    assert index.nearest("key:a", "model=x", [1.0, 0.0], ("5 km",), THRESHOLD) == ("entry", 1.0)
    assert index.nearest("key:b", "model=x", [1.0, 0.0], ("5 km",), THRESHOLD) is None
    assert index.nearest("key:a", "model=y", [1.0, 0.0], ("5 km",), THRESHOLD) is None
    assert index.nearest("key:a", "model=x", [1.0, 0.0], ("5 mi",), THRESHOLD) is None
    assert index.nearest("key:a", "model=x", [1.0, 0.0], (), THRESHOLD) is None
    assert index.nearest("key:a", "model=x", [1.0, 0.0, 0.0], ("5 km",), THRESHOLD) is None
    # The nearer entry of another scope is never the answer.
    index.add("key:b", "model=x", [1.0, 0.0], ("5 km",), "other")
    index.add("key:a", "model=x", [0.9, 0.1], ("5 km",), "mine")
    assert index.nearest("key:a", "model=x", [0.0, 1.0], ("5 km",), -1.0) == (
        "mine",
        pytest.approx(0.1 / math.sqrt(0.82)),
    )


def test_when_full_the_oldest_goes() -> None:
    index = SemanticIndex(3)
    for n, key in enumerate(["k1", "k2", "k3"]):
        index.add("s", "", [1.0, float(n)], (), key)
    index.add("s", "", [1.0, 0.0], (), "k1")  # added again: now the newest
    index.add("other", "", [1.0, 9.0], (), "k4")

    assert len(index) == 3
    assert index.nearest("s", "", [1.0, 1.0], (), 0.999) is None  # k2 went
    assert index.nearest("s", "", [1.0, 0.0], (), 0.999) == ("k1", pytest.approx(1.0))
    assert index.nearest("s", "", [1.0, 2.0], (), 0.999) == ("k3", pytest.approx(1.0))
    assert index.nearest("other", "", [1.0, 9.0], (), 0.999) == ("k4", pytest.approx(1.0))


def test_remove() -> None:
    index = SemanticIndex(5)
    index.add("s", "", [1.0, 0.0], (), "a")
    index.add("s", "", [0.0, 1.0], (), "b")
    index.remove("a")
    index.remove("a")  # again, and an unknown key: nothing happens
    index.remove("never")

    assert len(index) == 1
    assert index.nearest("s", "", [1.0, 0.0], (), -1.0) == ("b", pytest.approx(0.0, abs=1e-6))
    index.remove("b")
    assert len(index) == 0 and index.nearest("s", "", [1.0, 0.0], (), -1.0) is None
    index.add("s", "", [1.0, 0.0], (), "a")  # an emptied group comes back
    assert index.nearest("s", "", [1.0, 0.0], (), THRESHOLD) == ("a", 1.0)


def test_each_entry_is_still_its_own_nearest_after_many_removals() -> None:
    rng = random.Random(22)
    index = SemanticIndex(1000)
    vectors = {f"k{n}": [rng.gauss(0, 1) for _ in range(16)] for n in range(200)}
    for key, vector in vectors.items():
        index.add("s", "", vector, (), key)
    gone = rng.sample(sorted(vectors), 150)
    for key in gone:
        index.remove(key)

    assert len(index) == 50
    for key, vector in vectors.items():
        found = index.nearest("s", "", vector, (), 0.999)
        assert (found is None) if key in gone else (found == (key, pytest.approx(1.0)))


def test_vectors_that_cannot_be_scaled_are_not_stored_and_find_nothing() -> None:
    index = SemanticIndex(5)
    index.add("s", "", [0.0, 0.0], (), "zero")
    index.add("s", "", [float("nan"), 1.0], (), "nan")
    index.add("s", "", [], (), "empty")
    index.add("s", "", [1.0, 0.0], (), "fine")

    assert len(index) == 1
    assert index.nearest("s", "", [0.0, 0.0], (), -1.0) is None
    assert index.nearest("s", "", [float("inf"), 0.0], (), -1.0) is None
    with pytest.raises(ValueError):
        SemanticIndex(0)


# --- the fake upstream's word vectors ------------------------------------------------------------


def test_word_vectors_put_paraphrases_together_and_are_deterministic() -> None:
    same = word_vector("Could you please buy an automobile?", DIMS)
    assert same == word_vector("buy a car", DIMS) == word_vector("purchase a CAR!", DIMS)
    assert math.isclose(sum(v * v for v in same), 1.0)
    assert word_vector("the a an", 8) == [0.0] * 8
    apart = sum(a * b for a, b in zip(same, word_vector("sell a car", DIMS), strict=True))
    assert apart == pytest.approx(0.5)


async def embed(fake: FakeUpstream, texts: list[str], route: str = "openai.embeddings") -> Any:
    """The texts' vectors as the fake upstream's embeddings endpoint answers them."""
    if route == "openai.embeddings":
        url, body = f"{fake.base_url('openai')}/embeddings", {"model": "embed", "input": texts}
    else:
        url, body = f"{fake.base_url('ollama')}/api/embed", {"model": "embed", "input": texts}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={**body, "dimensions": DIMS}) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
    if "embeddings" in answer:
        return answer["embeddings"]
    return [row["embedding"] for row in sorted(answer["data"], key=lambda r: r["index"])]


@pytest.mark.parametrize("route", ["openai.embeddings", "ollama.embed"])
async def test_the_fake_answers_word_vectors_when_asked(
    fake_upstream: FakeUpstream, route: str
) -> None:
    texts = ["Buy a car", "purchase an automobile", "sell a car"]
    assert await embed(fake_upstream, texts, route) == [
        fake_vector(t, i, DIMS) for i, t in enumerate(texts)
    ]  # the default
    fake_upstream.set_default(Reply(vectors_by="words"), route)
    assert await embed(fake_upstream, texts, route) == [word_vector(t, DIMS) for t in texts]


# --- the false-hit set ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    hits: list[str]  # should-hit pairs whose second found its first
    misses: list[str]  # should-hit pairs whose second found nothing (or another entry)
    false_hits: list[str]  # must-not-hit pairs whose second found anything


async def replay(fake: FakeUpstream, use_guards: bool) -> Outcome:
    """Every pair's first text stored in one index (one scope, one shape), then every second
    text looked up at the default threshold; vectors from the fake's embeddings endpoint."""
    pairs = [("must_not_hit", p) for p in PAIRS["must_not_hit"]]
    pairs += [("should_hit", p) for p in PAIRS["should_hit"]]
    fake.set_default(Reply(vectors_by="words"), "openai.embeddings")
    firsts = await embed(fake, [p["a"] for _, p in pairs])
    seconds = await embed(fake, [p["b"] for _, p in pairs])

    def guards(text: str) -> tuple[str, ...]:
        return guard_terms(text) if use_guards else ()

    index = SemanticIndex(10_000)
    for n, ((_, pair), vector) in enumerate(zip(pairs, firsts, strict=True)):
        index.add("key:k", "model=m", vector, guards(pair["a"]), str(n))
    outcome = Outcome([], [], [])
    for n, ((section, pair), vector) in enumerate(zip(pairs, seconds, strict=True)):
        found = index.nearest("key:k", "model=m", vector, guards(pair["b"]), THRESHOLD)
        label = f"{pair['kind']}: {pair['a']!r} / {pair['b']!r}"
        if section == "must_not_hit":
            if found is not None:
                outcome.false_hits.append(f"{label} (similarity {found[1]:.3f})")
        elif found is not None and found[0] == str(n):
            outcome.hits.append(label)
        else:
            outcome.misses.append(label)
    return outcome


def test_the_pair_set_is_big_enough() -> None:
    assert len(PAIRS["must_not_hit"]) + len(PAIRS["should_hit"]) >= 30
    assert len(PAIRS["must_not_hit"]) >= 30 and len(PAIRS["should_hit"]) >= 20


async def test_no_false_hits_and_the_paraphrases_hit(fake_upstream: FakeUpstream) -> None:
    outcome = await replay(fake_upstream, use_guards=True)
    should = PAIRS["should_hit"]
    print(
        f"\nsemantic pairs at threshold {THRESHOLD}: false hits "
        f"{len(outcome.false_hits)}/{len(PAIRS['must_not_hit'])}, hits "
        f"{len(outcome.hits)}/{len(should)}; misses: {outcome.misses}"
    )

    assert outcome.false_hits == []
    # Every paraphrase hits but those the file marks as known misses of the guards.
    known = [f"{p['kind']}: {p['a']!r} / {p['b']!r}" for p in should if p.get("miss")]
    assert outcome.misses == known
    assert len(outcome.hits) >= 20


async def test_without_the_guards_the_vectors_alone_would_hit_wrongly(
    fake_upstream: FakeUpstream,
) -> None:
    outcome = await replay(fake_upstream, use_guards=False)
    print(
        f"\nwithout guards: false hits {len(outcome.false_hits)}/{len(PAIRS['must_not_hit'])}:\n"
        + "\n".join(outcome.false_hits)
    )

    assert len(outcome.false_hits) >= 10  # swapped numbers, names, units; long requests
    assert len(outcome.hits) == len(PAIRS["should_hit"])
