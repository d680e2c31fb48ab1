"""Authentication end to end: a real gateway with keys, a real channel, the openai fake upstream.

A call without a valid key ends UNAUTHENTICATED before any other work, so it never reaches a
provider; a valid key's id is the caller everywhere after (log, metrics, traces, dedup).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from hapax.v1 import admin_service_pb2 as admin_pb
from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability import tracing as telemetry
from tests.admission.conftest import NARROW_KEY, OPS_KEY, SEARCH_KEY, auth_settings, bearer
from tests.conftest import AccessLog, Gateway, StartGateway
from tests.fakes.upstream import FakeUpstream, Reply
from tests.observability.conftest import Observe
from tests.support.status_details import details_of

CHAT = "openai.chat"


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return caught.value


def both(gateway: Gateway, sent: Any, **fields: Any) -> list[Any]:
    """The same request as Complete and as StreamComplete, with `sent` as call metadata."""
    return [
        gateway.stub.Complete(pb.CompleteRequest(**fields), metadata=sent),
        gateway.stub.StreamComplete(pb.StreamCompleteRequest(**fields), metadata=sent),
    ]


@pytest.mark.parametrize(
    ("metadata", "reason", "message"),
    [
        ((), "API_KEY_MISSING", "no API key: send metadata 'authorization: Bearer <key>'"),
        (bearer("hpx_wrong"), "API_KEY_INVALID", "the API key is not valid"),
        ((("x-api-key", SEARCH_KEY[:-1]),), "API_KEY_INVALID", "the API key is not valid"),
        (
            (("authorization", f"Basic {SEARCH_KEY}"),),
            "API_KEY_MISSING",
            "the authorization metadata must be 'Bearer <key>'",
        ),
    ],
)
async def test_a_call_without_a_valid_key_is_unauthenticated_and_reaches_no_provider(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    access_log: AccessLog,
    metadata: Any,
    reason: str,
    message: str,
) -> None:
    gateway = await start_gateway(auth_settings(fake_upstream))
    for call in both(gateway, metadata, prompt="spend my provider budget"):
        error = await refused(call)
        got = details_of(error)
        assert got.code is grpc.StatusCode.UNAUTHENTICATED
        assert got.info is not None and got.info.reason == reason
        assert got.info.domain == "hapax.gateway"
        assert got.message.startswith(message)
        assert SEARCH_KEY not in got.message and "hpx_wrong" not in got.message
    assert fake_upstream.count(CHAT) == 0
    await access_log.wait_for(2)
    assert [(r.code, r.error_reason, r.client) for r in access_log.records] == [  # type: ignore[attr-defined]
        ("UNAUTHENTICATED", reason, "")
    ] * 2


async def test_authentication_comes_before_decoding_and_validation(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(auth_settings(fake_upstream))
    garbage = gateway.channel.unary_unary("/hapax.v1.CompletionService/Complete")
    error = await refused(garbage(b"\xff\xff\xff\xff not protobuf"))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    error = await refused(gateway.stub.Complete(pb.CompleteRequest()))  # no prompt: invalid
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    error = await refused(gateway.stub.Complete(pb.CompleteRequest(model="no-such")))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    # With a key, the same bytes get their own answers.
    error = await refused(garbage(b"\xff\xff\xff\xff", metadata=bearer(SEARCH_KEY)))
    assert details_of(error).info.reason == "MALFORMED_REQUEST"  # type: ignore[union-attr]
    error = await refused(gateway.stub.Complete(pb.CompleteRequest(), metadata=bearer(SEARCH_KEY)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fake_upstream.count(CHAT) == 0


async def test_a_valid_key_as_bearer_or_x_api_key_is_served_and_logged_by_its_id(
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    access_log: AccessLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await start_gateway(auth_settings(fake_upstream))
    fake_upstream.set_default(Reply(text="served"))
    reply = await gateway.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.text == "served"
    chunks = [
        m
        async for m in gateway.stub.StreamComplete(
            pb.StreamCompleteRequest(prompt="hi"), metadata=(("x-api-key", OPS_KEY),)
        )
    ]
    assert "".join(c.delta for c in chunks) == "served"
    await access_log.wait_for(2)
    assert [(r.code, r.client) for r in access_log.records] == [  # type: ignore[attr-defined]
        ("OK", "search"),
        ("OK", "ops"),
    ]
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert SEARCH_KEY not in logged and OPS_KEY not in logged
    # The upstream sees the provider's own credentials, never the caller's key.
    for request in fake_upstream.requests_to(CHAT):
        assert SEARCH_KEY not in repr(request) and OPS_KEY not in repr(request)


async def test_a_model_or_metadata_outside_the_keys_policy_is_permission_denied(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(auth_settings(fake_upstream))
    fake_upstream.set_default(Reply(text="ok"))
    for call in both(gateway, bearer(NARROW_KEY), model="gpt-4o", prompt="hi"):
        got = details_of(await refused(call))
        assert got.code is grpc.StatusCode.PERMISSION_DENIED
        assert got.info is not None and got.info.reason == "MODEL_NOT_ALLOWED"
        assert dict(got.info.metadata) == {
            "client": "narrow",
            "model": "gpt-4o",
            "request_id": got.info.metadata["request_id"],
        }
    metadata = {"tenant": "a", "cost_center": "7"}
    for call in both(gateway, bearer(NARROW_KEY), model="chat-x", prompt="hi", metadata=metadata):
        got = details_of(await refused(call))
        assert got.code is grpc.StatusCode.PERMISSION_DENIED
        assert got.info is not None and got.info.reason == "METADATA_KEY_NOT_ALLOWED"
        assert got.info.metadata["metadata_keys"] == "cost_center"
    assert fake_upstream.count(CHAT) == 0
    reply = await gateway.stub.Complete(
        pb.CompleteRequest(model="chat-x", prompt="hi", metadata={"tenant": "a"}),
        metadata=bearer(NARROW_KEY),
    )
    assert reply.text == "ok"


async def test_the_default_model_is_judged_after_it_is_resolved(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(auth_settings(fake_upstream))  # default_model: "default"
    got = details_of(
        await refused(
            gateway.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(NARROW_KEY))
        )
    )
    assert got.info is not None and got.info.metadata["model"] == "default"


async def test_health_stays_open_without_a_key(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth_settings())
    health = health_pb2_grpc.HealthStub(gateway.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service="hapax.v1.CompletionService"))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def list_services(gateway: Gateway, metadata: Any = ()) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    call = stub.ServerReflectionInfo(metadata=metadata)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    return [s.name for s in reply.list_services_response.service]


@pytest.mark.parametrize(
    ("access", "anonymous", "plain_key", "admin_key"),
    [
        ("open", "ok", "ok", "ok"),
        ("any_key", "API_KEY_MISSING", "ok", "ok"),
        ("admin", "API_KEY_MISSING", "ADMIN_KEY_REQUIRED", "ok"),
    ],
)
async def test_reflection_and_admin_service_each_follow_their_setting(
    start_gateway: StartGateway, access: str, anonymous: str, plain_key: str, admin_key: str
) -> None:
    gateway = await start_gateway(auth_settings(reflection=access, admin_service=access))

    async def outcome(call: Any) -> str:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            info = details_of(error).info
            return info.reason if info is not None else error.code().name
        return "ok"

    for metadata, expected in (
        ((), anonymous),
        (bearer(SEARCH_KEY), plain_key),
        (
            bearer(OPS_KEY),
            admin_key,
        ),
    ):
        assert await outcome(list_services(gateway, metadata)) == expected, metadata
        listed = gateway.admin.ListProviders(admin_pb.ListProvidersRequest(), metadata=metadata)
        assert await outcome(listed) == expected, metadata
    codes = {
        "API_KEY_MISSING": grpc.StatusCode.UNAUTHENTICATED,
        "ADMIN_KEY_REQUIRED": grpc.StatusCode.PERMISSION_DENIED,
    }
    for expected in {anonymous, plain_key} - {"ok"}:
        metadata = () if expected == "API_KEY_MISSING" else bearer(SEARCH_KEY)
        error = await refused(list_services(gateway, metadata))
        assert error.code() is codes[expected]


async def test_identical_calls_share_an_answer_only_under_one_key(
    start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    gateway = await start_gateway(auth_settings(fake_upstream))
    fake_upstream.set_default(Reply(text="answer"))
    fake_upstream.hold()
    same = pb.CompleteRequest(prompt="same", temperature=0.0)
    calls = [
        asyncio.ensure_future(gateway.stub.Complete(same, metadata=bearer(key)))
        for key in (SEARCH_KEY, SEARCH_KEY, OPS_KEY)
    ]
    await asyncio.sleep(0.3)
    fake_upstream.release()
    replies = await asyncio.gather(*calls)
    assert fake_upstream.count(CHAT) == 2, "one upstream call per key"
    assert sorted(r.route.shared for r in replies[:2]) == [False, True]
    assert replies[2].route.shared is False


async def test_the_key_id_is_on_the_server_span(observe: Observe) -> None:
    exporter = InMemorySpanExporter()
    observed = await observe(auth_settings(), tracing=telemetry.with_exporter(exporter))
    await observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    await refused(observed.stub.Complete(pb.CompleteRequest(prompt="hi")))
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [(s.attributes or {}).get(telemetry.CLIENT_ATTRIBUTE) for s in servers] == [
        "search",
        None,
    ]
    assert all(SEARCH_KEY not in repr(dict(s.attributes or {})) for s in servers)


async def test_refused_calls_are_counted_by_reason(observe: Observe) -> None:
    observed = await observe(auth_settings())
    await refused(observed.stub.Complete(pb.CompleteRequest(prompt="hi")))
    await refused(observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer("no")))
    samples = await observed.samples()
    assert samples.value("hapax_errors_total", type="API_KEY_MISSING") == 1
    assert samples.value("hapax_errors_total", type="API_KEY_INVALID") == 1
    assert (
        samples.value("hapax_grpc_requests_total", method="Complete", code="UNAUTHENTICATED") == 2
    )
