"""Routing that never drops a request: failover, retries, breakers, health and dedup, end to end
through a real gateway and real HTTP fake upstreams that fail in every way."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hapax.v1 import admin_service_pb2 as admin_pb
from hapax.v1 import completion_service_pb2 as pb
from hapaxd.core.events import BreakerChanged
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Hang, Malformed, Reply
from tests.support.clock import Clock
from tests.support.recorder import Recorder
from tests.support.status_details import details_of

FAST = {"connect": "200ms", "first_byte": "300ms", "idle": "300ms", "total": "5s"}
GENEROUS = {"connect": "5s", "first_byte": "20s", "idle": "20s", "total": "30s"}


def provider(name: str, fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"chat": f"{name}-model"},
        "timeouts": FAST,
        **extra,
    }


def settings(*providers: dict[str, Any], **extra: Any) -> Any:
    extra.setdefault(
        "router", {"retry": {"max_attempts": 2, "initial_backoff": "1ms", "max_backoff": "5ms"}}
    )
    return make_settings(providers=list(providers), default_model="chat", **extra)


@pytest.fixture
async def backup() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


def ask(text: str) -> pb.CompleteRequest:
    return pb.CompleteRequest(messages=[pb.Message(role=pb.ROLE_USER, content=text)])


async def test_1000_requests_through_a_flapping_primary_all_succeed(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    """Every failure a primary can show, unary and streaming, while it also stops listening and
    comes back: with the backup healthy, no caller notices."""
    failures = [
        Fail(500),
        Fail(503, retry_after="0"),
        Fail(429),
        Fail(429, retry_after="0"),
        Fail(502),
        Malformed(after=0),
        Hang(seconds=1.0),  # hangs before headers past first_byte
        Hang(seconds=0.05, then=Reply(text="primary")),  # a slow first byte that is in time
        Reply(text="primary", chunks=3, drop_after=0),  # reset before the body (streams)
        Reply(text="primary"),
        Reply(text="primary"),
    ]
    fake_upstream.script(None, *itertools.islice(itertools.cycle(failures), 2000))
    backup.set_default(Reply(text="backup"))
    gateway = await start_gateway(
        settings(
            provider(
                "primary",
                fake_upstream,
                circuit_breaker={"failure_threshold": 3, "timeout": "20ms"},
            ),
            provider("backup", backup, timeouts=GENEROUS),  # the last resort must not time out
        )
    )
    limit = asyncio.Semaphore(50)
    done = 0
    reached = {n: asyncio.Event() for n in (200, 250, 500, 550, 800, 850)}

    async def one(i: int) -> tuple[str, str, int]:
        nonlocal done
        async with limit:
            try:
                if i % 4:
                    reply = await gateway.stub.Complete(ask(f"request {i}"), timeout=20)
                    return reply.text, reply.route.provider, reply.route.attempts
                messages = [
                    m
                    async for m in gateway.stub.StreamComplete(
                        pb.StreamCompleteRequest(prompt=f"stream {i}"), timeout=20
                    )
                ]
                last = messages[-1]
                return "".join(m.delta for m in messages), last.route.provider, last.route.attempts
            finally:
                done += 1
                if done in reached:
                    reached[done].set()

    async def flap() -> None:
        """The primary refuses connections for a while, three times during the run."""
        for at in (200, 500, 800):
            await reached[at].wait()
            await fake_upstream.refuse_connections()
            await reached[at + 50].wait()
            await fake_upstream.accept_connections()

    flapper = asyncio.create_task(flap())
    results = await asyncio.gather(*(one(i) for i in range(1000)))
    await flapper
    assert len(results) == 1000
    assert {text for text, _, _ in results} <= {"primary", "backup"}
    served = collections.Counter(provider for _, provider, _ in results)
    assert served["primary"] > 0 and served["backup"] > 0, served
    assert any(attempts > 1 for _, _, attempts in results)


async def test_breaker_opens_sends_nothing_while_open_half_opens_and_closes(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    clock, events = Clock(), Recorder()
    fake_upstream.set_default(Fail(500))
    gateway = await start_gateway(
        settings(
            provider("primary", fake_upstream),
            provider("backup", backup),
            circuit_breaker={"failure_threshold": 3, "timeout": "30s", "max_requests": 1},
            router={"retry": {"max_attempts": 1}},
        ),
        clock=clock,
        listeners=[events],
    )
    chat = "openai.chat"

    async def breaker_state() -> int:
        reply = await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())
        return {p.name: p.breaker_state for p in reply.providers}["primary"]

    for i in range(3):
        assert (await gateway.stub.Complete(ask(f"a{i}"))).route.provider == "backup"
    assert fake_upstream.count(chat) == 3
    assert await breaker_state() == admin_pb.BREAKER_STATE_OPEN

    for i in range(10):
        reply = await gateway.stub.Complete(ask(f"b{i}"))
        assert (reply.route.provider, reply.route.attempts) == ("backup", 1)
    assert fake_upstream.count(chat) == 3, "an open breaker lets nothing through"

    clock.now += 30
    assert await breaker_state() == admin_pb.BREAKER_STATE_HALF_OPEN
    assert (await gateway.stub.Complete(ask("trial 1"))).route.provider == "backup"
    assert fake_upstream.count(chat) == 4, "one trial went through and failed"
    assert await breaker_state() == admin_pb.BREAKER_STATE_OPEN

    clock.now += 30
    fake_upstream.set_default(Reply(text="recovered"))
    reply = await gateway.stub.Complete(ask("trial 2"))
    assert (reply.route.provider, reply.text) == ("primary", "recovered")
    assert await breaker_state() == admin_pb.BREAKER_STATE_CLOSED
    assert [(e.provider, e.state) for e in events.of(BreakerChanged)] == [
        ("primary", "open"),
        ("primary", "half_open"),
        ("primary", "open"),
        ("primary", "half_open"),
        ("primary", "closed"),
    ]


async def test_caller_faults_never_trip_the_breaker(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(400, message="max_tokens is too large"))
    gateway = await start_gateway(
        settings(
            provider("primary", fake_upstream),
            provider("backup", backup),
            circuit_breaker={"failure_threshold": 2},
        )
    )
    for i in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Complete(ask(f"bad {i}"))
        details = details_of(caught.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.info is not None and details.info.reason == "UPSTREAM_REJECTED_REQUEST"
    assert fake_upstream.count("openai.chat") == 5
    assert backup.count("openai.chat") == 0, "a caller fault is not retried elsewhere"
    reply = await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())
    assert reply.providers[0].breaker_state == admin_pb.BREAKER_STATE_CLOSED


async def test_every_provider_down_is_unavailable_with_attempts_and_retry_info(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(503))
    await backup.refuse_connections()
    gateway = await start_gateway(settings(provider("a", fake_upstream), provider("b", backup)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(ask("x"))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.info is not None
    assert details.info.metadata["attempts"] == "a:transient,a:transient,b:transient,b:transient"
    assert details.retry is not None


async def test_every_provider_rate_limiting_is_resource_exhausted_with_the_shortest_wait(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(429, retry_after="40"))
    backup.set_default(Fail(429, retry_after="25"))
    gateway = await start_gateway(settings(provider("a", fake_upstream), provider("b", backup)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(ask("x"))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.retry is not None and details.retry.retry_delay.seconds == 25
    assert details.quota is not None and len(details.quota.violations) == 2
    assert (fake_upstream.count("openai.chat"), backup.count("openai.chat")) == (1, 1)


async def test_retry_after_that_fits_is_honoured_on_the_same_provider(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.script("openai.chat", Fail(429, retry_after="0.05"), Reply(text="after wait"))
    gateway = await start_gateway(settings(provider("a", fake_upstream), provider("b", backup)))
    reply = await gateway.stub.Complete(ask("x"))
    assert (reply.text, reply.route.provider, reply.route.attempts) == ("after wait", "a", 2)
    assert backup.count("openai.chat") == 0


async def test_deadline_budget_covers_all_attempts_and_lists_them(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.script("openai.chat", Fail(500), Fail(500))
    backup.set_default(Hang())
    gateway = await start_gateway(
        settings(
            provider("a", fake_upstream),
            provider("b", backup, timeouts={**FAST, "first_byte": "30s", "idle": "30s"}),
            router={"default_deadline": "400ms", "retry": {"initial_backoff": "1ms"}},
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(ask("x"))
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details.info is not None
    assert details.info.metadata["attempts"] == "a:transient,a:transient,b:timeout"
    await backup.wait_for_disconnects(1)


async def test_a_caller_deadline_closes_the_upstream_request(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang())
    gateway = await start_gateway(
        settings(
            provider("a", fake_upstream, timeouts={**FAST, "first_byte": "30s", "idle": "30s"})
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Complete(ask("x"), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await fake_upstream.wait_for_disconnects(1)


async def test_a_cancelled_stream_closes_the_upstream_request(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text="one two three four", chunks=4, stall_after=1))
    gateway = await start_gateway(
        settings(
            provider("a", fake_upstream, timeouts={**FAST, "idle": "30s"}),
        )
    )
    call = gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x"))
    first = await call.read()
    assert first.delta
    call.cancel()
    await fake_upstream.wait_for_disconnects(1)


async def test_stream_fails_over_only_before_first_chunk(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(503))
    backup.set_default(Reply(text="from the backup", chunks=3))
    gateway = await start_gateway(settings(provider("a", fake_upstream), provider("b", backup)))
    messages = [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x"))]
    assert "".join(m.delta for m in messages) == "from the backup"
    assert (messages[-1].route.provider, messages[-1].route.attempts) == ("b", 3)


@pytest.mark.parametrize("breakage", ["drop", "error_event", "stall"])
async def test_a_stream_broken_after_chunks_ends_with_stream_interrupted(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream, breakage: str
) -> None:
    broken = {
        "drop": Reply(text="aa bb cc dd", chunks=4, drop_after=2),
        "error_event": Reply(text="aa bb cc dd", chunks=4, error_after=2),
        "stall": Reply(text="aa bb cc dd", chunks=4, stall_after=2),
    }[breakage]
    fake_upstream.set_default(broken)
    gateway = await start_gateway(
        settings(
            provider("a", fake_upstream, timeouts={**FAST, "idle": "300ms"}),
            provider("b", backup),
        )
    )
    received: list[pb.StreamCompleteResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(prompt="x"), timeout=10
        ):
            received.append(message)
    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.info is not None and details.info.reason == "STREAM_INTERRUPTED"
    assert details.info.metadata["chunks_sent"] == "2"
    assert "".join(m.delta for m in received) == "aa bb"
    assert backup.count("openai.chat") == 0, "no failover once chunks reached the caller"


async def test_health_flips_to_not_serving_when_every_provider_is_down_and_back(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    probes = {
        "interval": "20ms",
        "timeout": "200ms",
        "failure_threshold": 2,
        "success_threshold": 2,
    }
    gateway = await start_gateway(
        settings(provider("a", fake_upstream), provider("b", backup), health_check=probes)
    )
    health = health_pb2_grpc.HealthStub(gateway.channel)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    for service in ("", "hapax.v1.CompletionService"):
        watch = health.Watch(health_pb2.HealthCheckRequest(service=service))
        assert (await watch.read()).status == serving
        fake_upstream.set_down()
        backup.set_down()
        async with asyncio.timeout(10):
            assert (await watch.read()).status == not_serving
        liveness = await health.Check(health_pb2.HealthCheckRequest(service="liveness"))
        assert liveness.status == serving  # out of rotation, not to be restarted
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Complete(ask("while down"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        backup.set_up()
        async with asyncio.timeout(10):
            assert (await watch.read()).status == serving
        reply = await gateway.stub.Complete(ask("after"))
        assert reply.route.provider == "b"
        fake_upstream.set_up()
        watch.cancel()
    listing = await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())
    assert [(p.name, p.type) for p in listing.providers] == [("a", "openai"), ("b", "openai")]
    assert fake_upstream.count("openai.models") > 0, "probes use the models list: no tokens"


async def test_health_is_not_serving_during_shutdown(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    health = health_pb2_grpc.HealthStub(gateway.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="hapax.v1.CompletionService"))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(gateway.app.stop(grace=5))
    async with asyncio.timeout(5):
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping


async def test_list_providers_reports_errors_latency_and_load(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(503, message="overloaded right now"))
    gateway = await start_gateway(
        settings(
            provider("a", fake_upstream),
            provider("b", backup),
            router={"retry": {"max_attempts": 1}},
        )
    )
    backup.hold()
    pending = gateway.stub.Complete(ask("x"))
    await backup.wait_for_requests(1)
    during = {
        p.name: p
        for p in (await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())).providers
    }
    backup.release()
    await pending
    after = {
        p.name: p
        for p in (await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())).providers
    }
    assert (during["a"].in_flight, during["b"].in_flight) == (0, 1)
    assert after["b"].in_flight == 0
    assert "transient" in after["a"].last_error and "overloaded right now" in after["a"].last_error
    assert after["b"].last_error == ""
    assert after["b"].latency_p50_ms > 0
    assert after["a"].base_url == fake_upstream.base_url("openai")
    assert all(
        p.healthy and p.breaker_state == admin_pb.BREAKER_STATE_CLOSED for p in after.values()
    )


async def test_an_upstream_404_fails_over_without_opening_the_breaker_or_blaming_the_gateway(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    fake_upstream.set_default(
        Fail(404, "The model `primary-model` does not exist", code="model_not_found")
    )
    gateway = await start_gateway(
        settings(
            provider("primary", fake_upstream),
            provider("backup", backup),
            circuit_breaker={"failure_threshold": 1},
        )
    )
    for i in range(3):
        reply = await gateway.stub.Complete(ask(f"q{i}"))
        assert (reply.route.provider, reply.route.attempts) == ("backup", 2)
    assert fake_upstream.count("openai.chat") == 3, "not retried, and never refused by a breaker"
    listed = await gateway.admin.ListProviders(admin_pb.ListProvidersRequest())
    primary = {p.name: p for p in listed.providers}["primary"]
    assert primary.breaker_state == admin_pb.BREAKER_STATE_CLOSED
    sample = gateway.app.observability.metrics.registry.get_sample_value
    labels = {"provider": "primary", "model": "chat"}
    assert sample("hapax_provider_requests_total", {**labels, "outcome": "model_unavailable"}) == 3
    assert sample("hapax_provider_requests_total", {**labels, "outcome": "internal"}) is None
