"""The router's failover, retry and deadline rules, on in-process scripted providers."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from hapaxd.breaker import CircuitBreaker
from hapaxd.config import BreakerSettings
from hapaxd.domain import CompletionRequest, Message, Role
from hapaxd.errors import (
    CallerRejected,
    DeadlineExceeded,
    FailureClass,
    NoProviderAvailable,
)
from hapaxd.router import Router
from hapaxd.upstreams import Upstream
from tests.conftest import make_settings
from tests.unit.scripted import ScriptedProvider

T = FailureClass
REQUEST = CompletionRequest(model="m", messages=(Message(Role.USER, "hello"),))


def router(
    *providers: ScriptedProvider,
    config: dict[str, Any] | None = None,
    sleeps: list[float] | None = None,
) -> Router:
    settings = make_settings(
        providers=[
            {"name": p.name, "type": "local", "models": {"m": f"{p.name}-model"}} for p in providers
        ],
        default_model="m",
        **(config or {}),
    )
    upstreams = [
        Upstream(p, CircuitBreaker(BreakerSettings(failure_threshold=1000))) for p in providers
    ]  # type: ignore[arg-type]

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return Router(settings, upstreams, rng=random.Random(7), sleep=sleep)


async def test_first_healthy_provider_in_preference_order_answers() -> None:
    a, b = ScriptedProvider("a", text="from a"), ScriptedProvider("b")
    completion, route = await router(a, b).complete(REQUEST)
    assert (completion.text, route.provider, route.upstream_model, route.attempts) == (
        "from a",
        "a",
        "a-model",
        1,
    )
    assert not b.calls
    assert a.calls[0].model == "a-model"


async def test_transient_failure_is_retried_on_the_same_provider_with_backoff() -> None:
    sleeps: list[float] = []
    a = ScriptedProvider("a", T.TRANSIENT)
    _, route = await router(a, ScriptedProvider("b"), sleeps=sleeps).complete(REQUEST)
    assert (route.provider, route.attempts, len(a.calls)) == ("a", 2, 2)
    assert len(sleeps) == 1 and 0.025 <= sleeps[0] <= 0.05


async def test_backoff_grows_exponentially() -> None:
    sleeps: list[float] = []
    a = ScriptedProvider("a", T.TRANSIENT, T.TRANSIENT, T.TRANSIENT)
    config = {"router": {"retry": {"max_attempts": 4, "initial_backoff": 1, "max_backoff": 100}}}
    await router(a, config=config, sleeps=sleeps).complete(REQUEST)
    assert [s >= b / 2 and s <= b for s, b in zip(sleeps, (1, 2, 4), strict=True)] == [True] * 3


async def test_retries_exhausted_fail_over_to_the_next_provider() -> None:
    a, b = ScriptedProvider("a", default=T.TRANSIENT), ScriptedProvider("b")
    _, route = await router(a, b).complete(REQUEST)
    assert (route.provider, route.attempts, len(a.calls)) == ("b", 3, 2)


@pytest.mark.parametrize("failure", [T.CREDENTIAL, T.TIMEOUT, T.INTERNAL])
async def test_non_retryable_failures_fail_over_at_once(failure: FailureClass) -> None:
    a, b = ScriptedProvider("a", failure), ScriptedProvider("b")
    _, route = await router(a, b).complete(REQUEST)
    assert (route.provider, len(a.calls)) == ("b", 1)


async def test_a_caller_fault_is_not_retried_anywhere() -> None:
    a, b = ScriptedProvider("a", T.CALLER), ScriptedProvider("b")
    with pytest.raises(CallerRejected):
        await router(a, b).complete(REQUEST)
    assert (len(a.calls), len(b.calls)) == (1, 0)


async def test_retry_after_is_honoured_when_it_fits() -> None:
    sleeps: list[float] = []
    a = ScriptedProvider("a", ("retry_after", 1.5))
    _, route = await router(a, ScriptedProvider("b"), sleeps=sleeps).complete(REQUEST)
    assert (route.provider, sleeps) == ("a", [1.5])


async def test_a_retry_after_longer_than_the_deadline_fails_over_instead() -> None:
    sleeps: list[float] = []
    a = ScriptedProvider("a", ("retry_after", 30))
    _, route = await router(a, ScriptedProvider("b"), sleeps=sleeps).complete(REQUEST, deadline=5)
    assert (route.provider, sleeps) == ("b", [])


async def test_every_provider_failing_is_unavailable_with_the_attempts() -> None:
    a, b = ScriptedProvider("a", default=T.TRANSIENT), ScriptedProvider("b", default=T.CREDENTIAL)
    with pytest.raises(NoProviderAvailable) as caught:
        await router(a, b).complete(REQUEST)
    assert [x.describe() for x in caught.value.attempts] == [
        "a:transient",
        "a:transient",
        "b:credential",
    ]
    assert not caught.value.all_rate_limited


async def test_every_provider_rate_limiting_is_reported_as_such_with_the_shortest_wait() -> None:
    a = ScriptedProvider("a", default=("retry_after", 40))
    b = ScriptedProvider("b", default=("retry_after", 20))
    with pytest.raises(NoProviderAvailable) as caught:
        await router(a, b).complete(REQUEST)
    assert caught.value.all_rate_limited
    assert caught.value.retry_after == 20


async def test_one_deadline_budget_covers_every_attempt() -> None:
    a, b = ScriptedProvider("a", "hang"), ScriptedProvider("b")
    with pytest.raises(DeadlineExceeded) as caught:
        await router(a, b).complete(REQUEST, deadline=0.05)
    assert a.cancelled == 1
    assert not b.calls
    assert [x.describe() for x in caught.value.attempts] == ["a:timeout"]


async def test_open_breaker_and_unhealthy_providers_are_skipped() -> None:
    a, b, c = ScriptedProvider("a"), ScriptedProvider("b"), ScriptedProvider("c")
    r = router(a, b, c)
    r.upstreams["a"].healthy = False
    r.upstreams["b"].breaker = CircuitBreaker(BreakerSettings(failure_threshold=1))
    r.upstreams["b"].breaker.failure()
    _, route = await r.complete(REQUEST)
    assert (route.provider, route.attempts, a.calls, b.calls) == ("c", 1, [], [])


async def test_weights_spread_load_within_a_rank() -> None:
    heavy, light = ScriptedProvider("heavy"), ScriptedProvider("light")
    settings = make_settings(
        providers=[
            {"name": "heavy", "type": "local", "models": {"m": "x"}, "weight": 3},
            {"name": "light", "type": "local", "models": {"m": "x"}, "weight": 1},
        ],
        default_model="m",
        provider_preference=[["heavy", "light"]],
    )
    upstreams = [
        Upstream(p, CircuitBreaker(BreakerSettings()), weight=w)  # type: ignore[arg-type]
        for p, w in ((heavy, 3.0), (light, 1.0))
    ]
    r = Router(settings, upstreams, rng=random.Random(1))
    for _ in range(400):
        await r.complete(REQUEST)
    assert 240 < len(heavy.calls) < 360, len(heavy.calls)
    assert len(heavy.calls) + len(light.calls) == 400


async def test_stream_fails_over_only_before_first_chunk() -> None:
    a, b = ScriptedProvider("a", T.TRANSIENT, T.TRANSIENT), ScriptedProvider("b", text="x y z")
    items = [item async for item in router(a, b).stream(REQUEST)]
    assert "".join(chunk.delta for chunk, _ in items) == "xyz"
    assert {route.provider for _, route in items} == {"b"}
    assert items[0][1].attempts == 3


async def test_cancelling_the_caller_cancels_the_upstream_call() -> None:
    a = ScriptedProvider("a", "hang")
    task = asyncio.create_task(router(a).complete(REQUEST))
    await asyncio.wait_for(a.called.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.cancelled == 1
