"""The router's failover, retry and deadline rules, on in-process scripted providers."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

from hapaxd.config import BreakerSettings
from hapaxd.core.breaker import CircuitBreaker, State
from hapaxd.core.errors import (
    CallerRejected,
    DeadlineExceeded,
    NoProviderAvailable,
    StreamInterrupted,
)
from hapaxd.core.events import AttemptFinished
from hapaxd.core.failures import FailureClass
from hapaxd.core.router import Router
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import (
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Message,
    Role,
    Route,
    Usage,
)
from hapaxd.core.upstream import Upstream
from tests.conftest import make_settings
from tests.support.recorder import Recorder
from tests.support.scripted import ScriptedProvider

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

    return Router(
        settings.router, RouteTable(settings), upstreams, rng=random.Random(7), sleep=sleep
    )


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
    assert len(sleeps) == 3
    for sleep, base in zip(sleeps, (1, 2, 4), strict=True):
        assert base / 2 <= sleep <= base, (sleep, base)


async def test_retries_exhausted_fail_over_to_the_next_provider() -> None:
    a, b = ScriptedProvider("a", default=T.TRANSIENT), ScriptedProvider("b")
    _, route = await router(a, b).complete(REQUEST)
    assert (route.provider, route.attempts, len(a.calls)) == ("b", 3, 2)


@pytest.mark.parametrize("failure", [T.CREDENTIAL, T.TIMEOUT, T.MODEL_UNAVAILABLE])
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
    assert caught.value.code == "UNAVAILABLE"


async def test_every_provider_rate_limiting_is_reported_as_such_with_the_shortest_wait() -> None:
    a = ScriptedProvider("a", default=("retry_after", 40))
    b = ScriptedProvider("b", default=("retry_after", 20))
    with pytest.raises(NoProviderAvailable) as caught:
        await router(a, b).complete(REQUEST)
    assert caught.value.code == "RESOURCE_EXHAUSTED"
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
    r = Router(settings.router, RouteTable(settings), upstreams, rng=random.Random(1))
    for _ in range(400):
        await r.complete(REQUEST)
    assert 240 < len(heavy.calls) < 360, len(heavy.calls)
    assert len(heavy.calls) + len(light.calls) == 400


async def test_a_stream_fails_over_before_its_first_chunk_and_ends_with_its_route() -> None:
    a, b = ScriptedProvider("a", T.TRANSIENT, T.TRANSIENT), ScriptedProvider("b", text="x y z")
    items = [item async for item in router(a, b).stream(REQUEST)]
    *chunks, route = items
    assert all(isinstance(c, Chunk) for c in chunks)
    assert "".join(c.delta for c in chunks if isinstance(c, Chunk)) == "xyz"
    assert isinstance(route, Route)
    assert (route.provider, route.attempts) == ("b", 3)
    assert route.upstream_seconds > 0


async def test_a_stream_broken_after_its_first_chunk_is_interrupted_not_failed_over() -> None:
    a, b = ScriptedProvider("a", text="x y z", break_after=2), ScriptedProvider("b")
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as caught:
        async for item in router(a, b).stream(REQUEST):
            assert isinstance(item, Chunk)
            received.append(item.delta)
    assert received == ["x", "y"]
    assert (caught.value.provider, caught.value.chunks_sent) == ("a", 2)
    assert b.calls == [], "nothing fails over once a chunk has reached the caller"


async def test_cancelling_the_caller_cancels_the_upstream_call() -> None:
    a = ScriptedProvider("a", "hang")
    task = asyncio.create_task(router(a).complete(REQUEST))
    await asyncio.wait_for(a.called.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.cancelled == 1


@pytest.mark.parametrize(
    ("failure", "counted"),
    [
        (T.TRANSIENT, True),
        (T.TIMEOUT, True),
        (T.CREDENTIAL, True),
        (T.RATE_LIMITED, True),
        (T.MODEL_UNAVAILABLE, False),
        (T.CALLER, False),
    ],
)
async def test_only_the_providers_own_failures_feed_its_breaker(
    failure: FailureClass, counted: bool
) -> None:
    a = ScriptedProvider("a", default=failure)
    r = router(a, ScriptedProvider("b"), config={"router": {"retry": {"max_attempts": 1}}})
    r.upstreams["a"].breaker = CircuitBreaker(BreakerSettings(failure_threshold=1))
    with contextlib.suppress(CallerRejected):
        await r.complete(REQUEST)
    assert (r.upstreams["a"].breaker.state is State.OPEN) is counted


async def test_a_caller_leaving_ends_its_attempt_as_cancelled_without_blame() -> None:
    events = Recorder()
    a = ScriptedProvider("a", "hang")
    r = router(a)
    r.listeners = [events]
    r.upstreams["a"].breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, max_requests=1))
    task = asyncio.create_task(r.complete(REQUEST))
    await asyncio.wait_for(a.called.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(e.provider, e.outcome) for e in events.of(AttemptFinished)] == [("a", "cancelled")]
    assert r.upstreams["a"].breaker.state is State.CLOSED
    assert r.upstreams["a"].in_flight == 0


async def test_the_route_says_how_long_the_upstreams_took() -> None:
    a = ScriptedProvider("a", T.TRANSIENT)
    _, route = await router(a, ScriptedProvider("b")).complete(REQUEST)
    assert route.attempts == 2
    assert route.upstream_seconds > 0


async def test_an_error_carries_the_upstream_time_spent() -> None:
    a = ScriptedProvider("a", default=T.TRANSIENT)
    with pytest.raises(NoProviderAvailable) as caught:
        await router(a).complete(REQUEST)
    assert caught.value.upstream_seconds > 0


class ScriptedEmbedder(ScriptedProvider):
    """A scripted provider that can embed: `vectors` vectors per answer (None: one per input)."""

    def __init__(self, name: str, *steps: Any, vectors: int | None = None) -> None:
        super().__init__(name, *steps)
        self.vectors = vectors

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        await self._step(request)  # type: ignore[arg-type]
        count = len(request.inputs) if self.vectors is None else self.vectors
        return Embeddings(tuple((float(i),) for i in range(count)), Usage(1), request.model)


EMBED = EmbeddingRequest(model="m", inputs=("one", "two"))


@pytest.mark.parametrize("vectors", [1, 3])
async def test_a_wrong_vector_count_fails_over_and_feeds_the_breaker(vectors: int) -> None:
    events = Recorder()
    a, b = ScriptedEmbedder("a", vectors=vectors), ScriptedEmbedder("b")
    r = router(a, b, config={"router": {"retry": {"max_attempts": 1}}})
    r.listeners = [events]
    r.upstreams["a"].breaker = CircuitBreaker(BreakerSettings(failure_threshold=1))

    answer, route = await r.embed(EMBED)

    assert (route.provider, route.attempts, len(answer.vectors)) == ("b", 2, 2)
    assert r.upstreams["a"].breaker.state is State.OPEN
    assert r.upstreams["a"].last_error == f"transient: a: {vectors} vectors for 2 inputs"
    assert [(e.provider, e.outcome) for e in events.of(AttemptFinished)] == [
        ("a", "transient"),
        ("b", "success"),
    ]


async def test_a_wrong_vector_count_everywhere_is_no_provider_available() -> None:
    a = ScriptedEmbedder("a", vectors=0)
    with pytest.raises(NoProviderAvailable) as caught:
        await router(a).embed(EMBED)
    assert [x.failure_class for x in caught.value.attempts] == [T.TRANSIENT, T.TRANSIENT]


async def test_embeddings_go_only_to_providers_that_can_embed() -> None:
    a, b = ScriptedProvider("a"), ScriptedEmbedder("b")
    r = router(a, b)  # both of type local: declared able to embed, but `a` has no embed()
    assert r.embedders == {"b"}
    answer, route = await r.embed(EMBED)
    assert (route.provider, route.attempts, len(a.calls), len(answer.vectors)) == ("b", 1, 0, 2)
    with pytest.raises(NoProviderAvailable) as caught:
        await router(ScriptedProvider("a")).embed(EMBED)
    assert caught.value.attempts == []
