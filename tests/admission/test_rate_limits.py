"""Rate limits and load shedding end to end, with the in-process store: what a refused caller
receives (RESOURCE_EXHAUSTED with RetryInfo, QuotaFailure and a `retry-after` trailer; shedding
UNAVAILABLE with RetryInfo), that a refused call reaches no provider, and the metric."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from tests.admission.conftest import SEARCH_KEY, bearer, keys
from tests.admission.test_auth import refused
from tests.conftest import StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Reply
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.status_details import details_of

CHAT = "openai.chat"


def limited(
    fake: FakeUpstream, observed: bool = False, config: dict[str, Any] | None = None, **limits: Any
) -> Any:
    """Auth on; the `search` key with `limits`; the openai fake serving every model; `config`:
    further sections (rate_limit, openai_http, ...)."""
    make = settings_with if observed else make_settings
    return make(
        auth={"keys": keys(search=limits)},
        providers=[openai_provider(fake, "up")],
        router={"retry": {"max_attempts": 1}},
        **(config or {}),
    )


def retry_after_trailer(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("retry-after")  # type: ignore[arg-type]


async def test_over_requests_per_minute_is_resource_exhausted_with_the_wait_and_the_limit(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    observed = await observe(limited(fake_upstream, observed=True, requests_per_minute=2))
    for _ in range(2):
        await observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    error = await refused(
        observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    )
    got = details_of(error)
    assert got.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.info is not None and got.info.reason == "RATE_LIMITED"
    assert got.info.metadata["client"] == "search"
    assert got.info.metadata["limit"] == "requests_per_minute"
    assert got.retry is not None
    wait = got.retry.retry_delay.seconds + got.retry.retry_delay.nanos / 1e9
    assert 29.0 < wait <= 30.0, "one call refills in 60/2 s"
    assert got.quota is not None
    assert [(v.subject, v.description) for v in got.quota.violations] == [
        ("api_key:search", "requests_per_minute")
    ]
    assert retry_after_trailer(error) == "30"
    assert fake_upstream.count(CHAT) == 2, "the refused call reached no provider"
    stream_error = await refused(
        observed.stub.StreamComplete(
            pb.StreamCompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
        )
    )
    assert stream_error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    samples = await observed.samples()
    hits = "hapax_rate_limit_hits_total"
    assert samples.value(hits, client="search", limit="requests_per_minute") == 2
    assert samples.value("hapax_errors_total", type="RATE_LIMITED") == 2
    # Keys without limits, and the other limits of this one, have no hits (but exist at zero).
    assert samples.labels(hits) == [{"client": "search", "limit": "requests_per_minute"}]


async def test_tokens_per_minute_counts_the_reported_usage_after_each_call(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(limited(fake_upstream, tokens_per_minute=1000))
    fake_upstream.set_default(Reply(text="long answer", prompt_tokens=10, completion_tokens=1500))
    reply = await gateway.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.usage.total_tokens == 1510  # admitted on its estimate (4 tokens), then charged
    error = await refused(
        gateway.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    )
    got = details_of(error)
    assert got.info is not None and got.info.metadata["limit"] == "tokens_per_minute"
    assert got.retry is not None and got.retry.retry_delay.seconds >= 30, "510 tokens of debt"
    assert fake_upstream.count(CHAT) == 1


async def one_stream_open(start: StartGateway, fake: FakeUpstream) -> tuple[Any, Any]:
    """A gateway whose `search` key may hold one stream, and that stream, open (it has had its
    first chunk) and paused at the upstream until `fake.release()`."""
    gateway = await start(limited(fake, max_concurrent_streams=1))
    fake.set_default(Reply(text="a b c", chunks=3, pause_after=1))
    first = gateway.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="one"), metadata=bearer(SEARCH_KEY)
    )
    assert (await first.read()).delta
    return gateway, first


async def stream_to_its_end(gateway: Any, fake: FakeUpstream) -> None:
    """A new stream of the key, with the upstream no longer pausing: it runs to its end."""
    fake.set_default(Reply(text="a b c", chunks=3))
    fake.release()
    chunks = [
        m
        async for m in gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(prompt="next"), metadata=bearer(SEARCH_KEY)
        )
    ]
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP


async def test_concurrent_streams_per_key_are_capped_until_one_ends(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway, first = await one_stream_open(start_gateway, fake_upstream)
    error = await refused(
        gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(prompt="two"), metadata=bearer(SEARCH_KEY)
        )
    )
    got = details_of(error)
    assert got.info is not None and got.info.metadata["limit"] == "concurrent_streams"
    assert retry_after_trailer(error) == "1"
    fake_upstream.set_default(Reply(text="a b c", chunks=3))
    fake_upstream.release()
    last = await first.read()
    while last is not grpc.aio.EOF and not last.route.provider:
        last = await first.read()
    assert last is not grpc.aio.EOF and last.route.provider == "up"
    await stream_to_its_end(gateway, fake_upstream)


async def test_a_caller_leaving_mid_stream_frees_its_slot(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway, first = await one_stream_open(start_gateway, fake_upstream)
    first.cancel()
    await fake_upstream.wait_for_disconnects(1)  # the gateway let the upstream stream go
    async with asyncio.timeout(5):  # and settles the call's ticket as its handler unwinds
        while gateway.app.limiter.streams_in_flight("search"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await stream_to_its_end(gateway, fake_upstream)


async def test_over_max_in_flight_calls_are_shed_unavailable_before_any_work(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    settings = make_settings(
        providers=[openai_provider(fake_upstream, "up")], server={"max_in_flight": 2}
    )
    gateway = await start_gateway(settings)
    fake_upstream.hold()
    held = [
        asyncio.ensure_future(gateway.stub.Complete(pb.CompleteRequest(prompt=f"held {i}")))
        for i in range(2)
    ]
    await fake_upstream.wait_for_requests(2)
    for call in (
        gateway.stub.Complete(pb.CompleteRequest(prompt="shed")),
        gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="shed")),
        gateway.stub.Complete(pb.CompleteRequest()),  # invalid, but shed before validation
    ):
        error = await refused(call)
        got = details_of(error)
        assert got.code is grpc.StatusCode.UNAVAILABLE
        assert got.info is not None and got.info.reason == "OVERLOADED"
        assert got.retry is not None and got.retry.retry_delay.seconds == 1
        assert retry_after_trailer(error) == "1"
        assert dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"] == "1000"  # type: ignore[arg-type]
    assert fake_upstream.count(CHAT) == 2
    fake_upstream.release()
    assert all(r.text for r in await asyncio.gather(*held))
    assert gateway.app.door is not None and gateway.app.door.in_flight == 0
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="after"))
    assert reply.text


async def test_a_shed_call_is_retried_by_grpcs_own_retry_policy_after_the_pushback(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    settings = make_settings(
        providers=[openai_provider(fake_upstream, "up")], server={"max_in_flight": 1}
    )
    gateway = await start_gateway(settings)
    service_config = json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": "hapax.v1.CompletionService"}],
                    "retryPolicy": {
                        "maxAttempts": 3,
                        "initialBackoff": "0.01s",
                        "maxBackoff": "0.01s",
                        "backoffMultiplier": 1,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )
    options = [("grpc.service_config", service_config), ("grpc.enable_retries", 1)]
    async with grpc.aio.insecure_channel(gateway.address, options=options) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        fake_upstream.hold()
        held = asyncio.ensure_future(stub.Complete(pb.CompleteRequest(prompt="held")))
        await fake_upstream.wait_for_requests(1)
        started = time.monotonic()
        retried = asyncio.ensure_future(stub.Complete(pb.CompleteRequest(prompt="retried")))
        await asyncio.sleep(0.3)  # shed once; the client waits the 1 s pushback, not 10 ms
        fake_upstream.release()
        assert (await held).text
        reply = await retried
        assert reply.text and time.monotonic() - started >= 0.9
    assert fake_upstream.count(CHAT) == 2


@pytest.mark.parametrize("shed", [False, True])
async def test_refused_calls_free_their_place_in_flight(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, shed: bool
) -> None:
    settings = make_settings(
        auth={"keys": keys()},
        providers=[openai_provider(fake_upstream, "up")],
        server={"max_in_flight": 1},
    )
    gateway = await start_gateway(settings)
    for _ in range(5):  # unauthenticated and invalid calls leave the door as they came
        await refused(gateway.stub.Complete(pb.CompleteRequest(prompt="x")))
        await refused(gateway.stub.Complete(pb.CompleteRequest(), metadata=bearer(SEARCH_KEY)))
    assert gateway.app.door is not None and gateway.app.door.in_flight == 0
    if shed:
        fake_upstream.hold()
        held = asyncio.ensure_future(
            gateway.stub.Complete(pb.CompleteRequest(prompt="held"), metadata=bearer(SEARCH_KEY))
        )
        await fake_upstream.wait_for_requests(1)
        error = await refused(gateway.stub.Complete(pb.CompleteRequest(prompt="x")))
        assert details_of(error).info.reason == "OVERLOADED"  # type: ignore[union-attr]
        fake_upstream.release()
        await held
    reply = await gateway.stub.Complete(
        pb.CompleteRequest(prompt="ok"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.text
