"""Rate limits without a server: the token buckets on a hand-driven clock, the token estimate and
its correction, streams in flight, through the Limiter with the in-process store."""

from __future__ import annotations

from typing import Any

import pytest

from hapaxd.admission.keys import Caller
from hapaxd.admission.limits import (
    REQUESTS,
    STREAMS,
    TOKENS,
    Bucket,
    Limiter,
    LocalStore,
    estimate_tokens,
)
from hapaxd.core.errors import RateLimited
from hapaxd.core.events import RateLimitHit
from hapaxd.core.types import CompletionRequest, Message, Role
from tests.support.recorder import Recorder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(text: str = "hi") -> CompletionRequest:
    return CompletionRequest(model="m", messages=(Message(Role.USER, text),))


def limiter(clock: Clock, events: Any = ()) -> Limiter:
    return Limiter(LocalStore(clock), listeners=[events] if events else [])


def test_the_estimate_is_four_characters_a_token_plus_three_per_message() -> None:
    assert estimate_tokens(request("")) == 3
    assert estimate_tokens(request("abcd")) == 4
    assert estimate_tokens(request("abcde")) == 5
    two = CompletionRequest(
        model="m", messages=(Message(Role.SYSTEM, "x" * 40), Message(Role.USER, "y" * 400))
    )
    assert estimate_tokens(two) == 10 + 100 + 6


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = Bucket.full(60, now=0.0)  # one a second
    bucket.level = 0
    assert bucket.wait(1) == pytest.approx(1.0)
    bucket.refill(0.5)
    assert bucket.level == pytest.approx(0.5)
    assert bucket.wait(1) == pytest.approx(0.5)
    bucket.refill(1000.0)
    assert bucket.level == 60
    assert bucket.wait(500) == 0, "a cost over the capacity fits a full bucket"


async def test_requests_per_minute_admits_a_burst_then_refuses_with_the_wait() -> None:
    clock, events = Clock(), Recorder()
    limits = limiter(clock, events)
    key = Caller("team", requests_per_minute=3)
    for _ in range(3):
        (await limits.admit(key, request(), stream=False)).settle(10)
    with pytest.raises(RateLimited) as caught:
        await limits.admit(key, request(), stream=False)
    assert (caught.value.client, caught.value.limit) == ("team", REQUESTS)
    assert caught.value.retry_after == pytest.approx(20.0), "one request refills in 60/3 s"
    assert events.of(RateLimitHit) == [RateLimitHit("team", REQUESTS)]
    clock.now += 20.0
    await limits.admit(key, request(), stream=False)
    other = Caller("other", requests_per_minute=3)
    await limits.admit(other, request(), stream=False)  # each key its own buckets


async def test_tokens_are_taken_by_estimate_and_corrected_from_the_reported_usage() -> None:
    clock = Clock()
    limits = limiter(clock)
    key = Caller("team", tokens_per_minute=600)  # ten tokens a second
    text = "x" * 400  # estimated 103
    ticket = await limits.admit(key, request(text), stream=False)
    ticket.settle(700)  # the answer was long: 597 more than estimated, into debt by 100
    with pytest.raises(RateLimited) as caught:
        await limits.admit(key, request(text), stream=False)
    assert caught.value.limit == TOKENS
    assert caught.value.retry_after == pytest.approx((103 + 100) / 10)
    clock.now += 20.4
    refunded = await limits.admit(key, request(text), stream=False)
    refunded.settle(None)  # no answer: the estimate comes back
    refunded.settle(5000)  # settling twice changes nothing
    await limits.admit(key, request(text), stream=False)


async def test_an_answer_without_usage_keeps_its_estimate() -> None:
    clock = Clock()
    limits = limiter(clock)
    key = Caller("team", tokens_per_minute=120)
    (await limits.admit(key, request("x" * 400), stream=False)).settle(0)  # 103 kept
    with pytest.raises(RateLimited):
        await limits.admit(key, request("x" * 400), stream=False)


async def test_a_refused_call_takes_from_no_bucket() -> None:
    clock = Clock()
    limits = limiter(clock)
    key = Caller("team", requests_per_minute=3, tokens_per_minute=100)
    await limits.admit(key, request("x" * 360), stream=False)  # 93 of 100 tokens, 1 of 3 calls
    for _ in range(5):  # refused by tokens: must not spend the request budget
        with pytest.raises(RateLimited) as caught:
            await limits.admit(key, request("x" * 360), stream=False)
        assert caught.value.limit == TOKENS
    clock.now += 10.0  # tokens refill to 23.7; calls to 2.5 (not below 1, had refusals spent)
    await limits.admit(key, request(""), stream=False)
    await limits.admit(key, request(""), stream=False)
    with pytest.raises(RateLimited) as caught:
        await limits.admit(key, request(""), stream=False)
    assert caught.value.limit == REQUESTS


async def test_streams_in_flight_are_capped_per_key_and_freed_when_settled() -> None:
    limits = limiter(Clock())
    key = Caller("team", max_concurrent_streams=2)
    first = await limits.admit(key, request(), stream=True)
    second = await limits.admit(key, request(), stream=True)
    await limits.admit(key, request(), stream=False)  # unary calls are not streams
    with pytest.raises(RateLimited) as caught:
        await limits.admit(key, request(), stream=True)
    assert caught.value.limit == STREAMS
    first.settle(None)
    first.settle(None)
    assert limits.streams_in_flight("team") == 1
    third = await limits.admit(key, request(), stream=True)
    second.settle(1)
    third.settle(1)
    assert limits.streams_in_flight("team") == 0


async def test_a_key_without_limits_costs_no_bookkeeping() -> None:
    limits = limiter(Clock())
    ticket = await limits.admit(Caller("free"), request(), stream=True)
    ticket.settle(10)
    assert limits.streams_in_flight("free") == 0
