"""Singleflight end to end: identical in-flight requests share one upstream call.

Sharing is per credential and for deterministic (temperature 0) requests unless configured
otherwise, so the tests that prove sharing works send a credential and temperature 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.core.events import Deduplicated
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.support.recorder import Recorder
from tests.support.status_details import details_of

CHAT = "openai.chat"
TENANT_A = (("authorization", "Bearer tenant-a"),)
TENANT_B = (("authorization", "Bearer tenant-b"),)
ANONYMOUS: tuple[tuple[str, str], ...] = ()


def complete(
    gateway: Any, metadata: Any = TENANT_A, temperature: float | None = 0.0, **fields: Any
) -> Any:
    """A Complete call, by default from tenant A at temperature 0: the kind that shares.
    `temperature=None` leaves it unset."""
    if temperature is not None:
        fields["temperature"] = temperature
    return gateway.stub.Complete(pb.CompleteRequest(**fields), metadata=metadata)


def stream(
    gateway: Any, metadata: Any = TENANT_A, temperature: float | None = 0.0, **fields: Any
) -> Any:
    if temperature is not None:
        fields["temperature"] = temperature
    return gateway.stub.StreamComplete(pb.StreamCompleteRequest(**fields), metadata=metadata)


def settings(fake: FakeUpstream, **extra: Any) -> Any:
    return make_settings(
        providers=[
            {
                "name": "up",
                "type": "openai",
                "base_url": fake.base_url("openai"),
                "models": {"chat": "m", "nodedup": "m"},
            }
        ],
        default_model="chat",
        models={"nodedup": {"dedup": False}},
        router={"retry": {"max_attempts": 1}},
        **extra,
    )


async def test_100_identical_completes_reach_the_upstream_once(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), listeners=[events])
    fake_upstream.set_default(Reply(text="one answer for all"))
    fake_upstream.hold()
    calls = [asyncio.ensure_future(complete(gateway, prompt="same")) for _ in range(100)]
    await events.wait_until(lambda: events.count(Deduplicated) == 99)
    fake_upstream.release()
    replies = await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 1
    assert {r.text for r in replies} == {"one answer for all"}
    assert sorted(r.route.shared for r in replies) == [False] + [True] * 99
    assert len({r.id for r in replies}) == 100, "each caller keeps its own request id"


async def test_every_waiter_gets_the_same_error(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), listeners=[events])
    fake_upstream.set_default(Fail(503))
    fake_upstream.hold()
    calls = [asyncio.ensure_future(complete(gateway, prompt="same")) for _ in range(5)]
    await events.wait_until(lambda: events.count(Deduplicated) == 4)
    fake_upstream.release()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert {details_of(r).code for r in results} == {grpc.StatusCode.UNAVAILABLE}  # type: ignore[arg-type]
    assert fake_upstream.count(CHAT) == 1


async def test_one_waiter_leaving_does_not_cancel_the_others_but_the_last_one_does(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), listeners=[events])
    fake_upstream.hold()
    leaving = complete(gateway, prompt="same")
    staying = complete(gateway, prompt="same")
    await events.wait_until(lambda: events.count(Deduplicated) == 1)
    leaving.cancel()
    await fake_upstream.wait_for_requests(1)
    fake_upstream.release()
    assert (await staying).text
    assert fake_upstream.disconnects == 0

    fake_upstream.hold()
    first = complete(gateway, prompt="again")
    second = complete(gateway, prompt="again")
    await events.wait_until(lambda: events.count(Deduplicated) == 2)
    await fake_upstream.wait_for_requests(2)
    first.cancel()
    second.cancel()
    await fake_upstream.wait_for_disconnects(1)


async def test_different_requests_or_callers_do_not_share(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(settings(fake_upstream))
    fake_upstream.hold()
    calls = [
        complete(gateway, prompt="same"),
        complete(gateway, prompt="same", max_tokens=5),
        complete(gateway, prompt="other"),
        complete(gateway, TENANT_B, prompt="same"),
        complete(gateway, prompt="same", model="nodedup"),
    ]
    await fake_upstream.wait_for_requests(5)
    fake_upstream.release()
    replies = await asyncio.gather(*calls)
    assert not any(r.route.shared for r in replies)
    assert fake_upstream.count(CHAT) == 5


async def test_callers_may_share_across_tenants_when_configured(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(
        settings(fake_upstream, dedup={"share_across_callers": True}), listeners=[events]
    )
    fake_upstream.hold()
    calls = [
        complete(gateway, (("authorization", f"Bearer tenant-{i}"),), prompt="same")
        for i in range(3)
    ]
    await events.wait_until(lambda: events.count(Deduplicated) == 2)
    fake_upstream.release()
    await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 1


async def test_identical_streams_share_one_upstream_stream_and_a_late_joiner_gets_it_all(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), listeners=[events])
    text = "one two three four five six"
    fake_upstream.set_default(Reply(text=text, chunks=6, pause_after=3))
    early = [stream(gateway, prompt="same") for _ in range(20)]
    firsts = [await call.read() for call in early]
    assert all(m.delta for m in firsts)
    await fake_upstream.wait_paused()
    late = stream(gateway, prompt="same")  # joins with three chunks already sent
    await events.wait_until(lambda: events.count(Deduplicated) == 20)
    fake_upstream.release()

    async def rest(call: Any, first: pb.StreamCompleteResponse | None) -> list[Any]:
        messages = [first] if first else []
        while (message := await call.read()) is not grpc.aio.EOF:
            messages.append(message)
        return messages

    streams = await asyncio.gather(
        *(rest(c, f) for c, f in zip(early, firsts, strict=True)), rest(late, None)
    )
    assert fake_upstream.count(CHAT) == 1
    for messages in streams:
        assert "".join(m.delta for m in messages) == text
        assert messages[-1].finish_reason == pb.FINISH_REASON_STOP
        assert messages[-1].usage.total_tokens > 0
    assert streams[-1][-1].route.shared
    assert sum(not s[-1].route.shared for s in streams) == 1


async def test_dedup_can_be_turned_off_per_model(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(settings(fake_upstream))
    fake_upstream.hold()
    calls = [complete(gateway, prompt="same", model="nodedup") for _ in range(3)]
    await fake_upstream.wait_for_requests(3)
    fake_upstream.release()
    await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 3


@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
async def test_shared_answers_say_so(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, rpc: str
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), listeners=[events])
    fake_upstream.hold()
    if rpc == "Complete":
        calls = [complete(gateway, prompt="s") for _ in range(2)]
        await events.wait_until(lambda: events.count(Deduplicated) == 1)
        fake_upstream.release()
        shared = [r.route.shared for r in await asyncio.gather(*calls)]
    else:
        streams = [stream(gateway, prompt="s") for _ in range(2)]
        await events.wait_until(lambda: events.count(Deduplicated) == 1)
        fake_upstream.release()
        shared = [[m async for m in s][-1].route.shared for s in streams]
    assert sorted(shared) == [False, True]


# Who shares with whom: dedup config, the two callers, temperature, upstream calls.
SAMPLED = {"sampled": True}
ACROSS = {"share_across_callers": True}
POLICY = {
    "one credential, greedy: shared": ({}, TENANT_A, TENANT_A, 0.0, 1),
    "two anonymous, greedy: not shared": ({}, ANONYMOUS, ANONYMOUS, 0.0, 2),
    "anonymous and a credential: not shared": ({}, ANONYMOUS, TENANT_A, 0.0, 2),
    "one credential, sampled: not shared": ({}, TENANT_A, TENANT_A, 0.9, 2),
    "one credential, unset: not shared": ({}, TENANT_A, TENANT_A, None, 2),
    "dedup.sampled, one credential, sampled: shared": (SAMPLED, TENANT_A, TENANT_A, 0.9, 1),
    "dedup.sampled, one credential, unset: shared": (SAMPLED, TENANT_A, TENANT_A, None, 1),
    "dedup.sampled, two anonymous: not shared": (SAMPLED, ANONYMOUS, ANONYMOUS, 0.9, 2),
    "share_across_callers, two anonymous, greedy: shared": (ACROSS, ANONYMOUS, ANONYMOUS, 0.0, 1),
    "share_across_callers, two tenants, sampled: not shared": (ACROSS, TENANT_A, TENANT_B, 0.9, 2),
}


@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
@pytest.mark.parametrize(
    ("dedup", "first", "second", "temperature", "upstream_calls"),
    list(POLICY.values()),
    ids=list(POLICY),
)
async def test_only_one_caller_asking_for_one_answer_shares_by_default(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    rpc: str,
    dedup: dict[str, bool],
    first: Any,
    second: Any,
    temperature: float | None,
    upstream_calls: int,
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream, dedup=dedup), listeners=[events])
    fake_upstream.hold()
    call = complete if rpc == "Complete" else stream
    calls = [call(gateway, who, temperature, prompt="same") for who in (first, second)]
    if upstream_calls == 1:
        await events.wait_until(lambda: events.count(Deduplicated) == 1)
    else:
        await fake_upstream.wait_for_requests(2)  # both in flight at once, neither joined
    fake_upstream.release()
    if rpc == "Complete":
        shared = [r.route.shared for r in await asyncio.gather(*calls)]
    else:
        shared = [[m async for m in s][-1].route.shared for s in calls]
    assert fake_upstream.count(CHAT) == upstream_calls
    assert events.count(Deduplicated) == 2 - upstream_calls
    assert sorted(shared) == [False, upstream_calls == 1]
