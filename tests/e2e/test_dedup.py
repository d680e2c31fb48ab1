"""Singleflight end to end: identical in-flight requests share one upstream call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.recorder import Recorder
from tests.status_details import details_of

CHAT = "openai.chat"


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
    gateway = await start_gateway(settings(fake_upstream), events=events)
    fake_upstream.set_default(Reply(text="one answer for all"))
    fake_upstream.hold()
    calls = [
        asyncio.ensure_future(gateway.stub.Complete(pb.CompleteRequest(prompt="same")))
        for _ in range(100)
    ]
    await events.wait_until(lambda: events.counts["deduplicated"] == 99)
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
    gateway = await start_gateway(settings(fake_upstream), events=events)
    fake_upstream.set_default(Fail(503))
    fake_upstream.hold()
    calls = [
        asyncio.ensure_future(gateway.stub.Complete(pb.CompleteRequest(prompt="same")))
        for _ in range(5)
    ]
    await events.wait_until(lambda: events.counts["deduplicated"] == 4)
    fake_upstream.release()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert {details_of(r).code for r in results} == {grpc.StatusCode.UNAVAILABLE}  # type: ignore[arg-type]
    assert fake_upstream.count(CHAT) == 1


async def test_one_waiter_leaving_does_not_cancel_the_others_but_the_last_one_does(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), events=events)
    fake_upstream.hold()
    leaving = gateway.stub.Complete(pb.CompleteRequest(prompt="same"))
    staying = gateway.stub.Complete(pb.CompleteRequest(prompt="same"))
    await events.wait_until(lambda: events.counts["deduplicated"] == 1)
    leaving.cancel()
    await fake_upstream.wait_for_requests(1)
    fake_upstream.release()
    assert (await staying).text
    assert fake_upstream.disconnects == 0

    fake_upstream.hold()
    first = gateway.stub.Complete(pb.CompleteRequest(prompt="again"))
    second = gateway.stub.Complete(pb.CompleteRequest(prompt="again"))
    await events.wait_until(lambda: events.counts["deduplicated"] == 2)
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
        gateway.stub.Complete(pb.CompleteRequest(prompt="same")),
        gateway.stub.Complete(pb.CompleteRequest(prompt="same", temperature=0.0)),
        gateway.stub.Complete(pb.CompleteRequest(prompt="other")),
        gateway.stub.Complete(
            pb.CompleteRequest(prompt="same"), metadata=(("authorization", "Bearer tenant-b"),)
        ),
        gateway.stub.Complete(pb.CompleteRequest(prompt="same", model="nodedup")),
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
        settings(fake_upstream, dedup={"share_across_callers": True}), events=events
    )
    fake_upstream.hold()
    calls = [
        gateway.stub.Complete(
            pb.CompleteRequest(prompt="same"), metadata=(("authorization", f"Bearer tenant-{i}"),)
        )
        for i in range(3)
    ]
    await events.wait_until(lambda: events.counts["deduplicated"] == 2)
    fake_upstream.release()
    await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 1


async def test_identical_streams_share_one_upstream_stream_and_a_late_joiner_gets_it_all(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), events=events)
    text = "one two three four five six"
    fake_upstream.set_default(Reply(text=text, chunks=6, pause_after=3))
    request = pb.StreamCompleteRequest(prompt="same")

    early = [gateway.stub.StreamComplete(request) for _ in range(20)]
    firsts = [await call.read() for call in early]
    assert all(m.delta for m in firsts)
    await fake_upstream.wait_paused()
    late = gateway.stub.StreamComplete(request)  # joins with three chunks already sent
    await events.wait_until(lambda: events.counts["deduplicated"] == 20)
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
    calls = [
        gateway.stub.Complete(pb.CompleteRequest(prompt="same", model="nodedup")) for _ in range(3)
    ]
    await fake_upstream.wait_for_requests(3)
    fake_upstream.release()
    await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 3


@pytest.mark.parametrize("rpc", ["Complete", "StreamComplete"])
async def test_shared_answers_say_so(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, rpc: str
) -> None:
    events = Recorder()
    gateway = await start_gateway(settings(fake_upstream), events=events)
    fake_upstream.hold()
    if rpc == "Complete":
        calls = [gateway.stub.Complete(pb.CompleteRequest(prompt="s")) for _ in range(2)]
        await events.wait_until(lambda: events.counts["deduplicated"] == 1)
        fake_upstream.release()
        shared = [r.route.shared for r in await asyncio.gather(*calls)]
    else:
        streams = [
            gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="s")) for _ in range(2)
        ]
        await events.wait_until(lambda: events.counts["deduplicated"] == 1)
        fake_upstream.release()
        shared = [[m async for m in s][-1].route.shared for s in streams]
    assert sorted(shared) == [False, True]
