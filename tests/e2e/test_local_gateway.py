"""The gateway on its built-in local provider, over a real channel."""

from __future__ import annotations

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from tests.conftest import Gateway, StartGateway, make_settings


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


async def test_complete_answers_from_the_local_provider_and_says_so(gateway: Gateway) -> None:
    reply = await gateway.stub.Complete(pb.CompleteRequest(messages=[user("hello there")]))
    assert "local provider" in reply.text
    assert reply.text.endswith("You said: hello there")
    assert reply.finish_reason == pb.FINISH_REASON_STOP
    assert reply.model == "default"
    assert reply.route.provider == "local"
    assert reply.route.upstream_model == "local"
    assert reply.route.attempts == 1
    assert reply.usage.prompt_tokens == 2
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_prompt_is_a_single_user_message(gateway: Gateway) -> None:
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="just a prompt"))
    assert reply.text.endswith("You said: just a prompt")


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(gateway: Gateway) -> None:
    reply = await gateway.stub.Complete(pb.CompleteRequest(prompt="hi", max_tokens=3))
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH
    assert reply.usage.completion_tokens == 3
    assert len(reply.text.split(" ")) == 3


async def test_stream_deltas_join_to_the_unary_text_and_last_message_says_what_served(
    gateway: Gateway,
) -> None:
    request = dict(messages=[user("stream me")], temperature=0.0)
    whole = await gateway.stub.Complete(pb.CompleteRequest(**request))
    messages = [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(**request))]
    assert len(messages) > 2
    assert "".join(m.delta for m in messages) == whole.text
    last = messages[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert last.route.provider == "local"
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in messages[:-1])
    assert len({m.id for m in messages}) == 1


async def test_request_id_is_taken_from_metadata_and_returned(gateway: Gateway) -> None:
    call = gateway.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=(("x-request-id", "req-123.abc"),)
    )
    reply = await call
    assert reply.id == "req-123.abc"
    assert ("x-request-id", "req-123.abc") in tuple(await call.trailing_metadata())
    assert "x-request-id" not in dict(await call.initial_metadata()), "no header batch of its own"


async def test_an_unsafe_request_id_is_replaced(gateway: Gateway) -> None:
    call = gateway.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=(("x-request-id", "bad id with spaces"),)
    )
    reply = await call
    assert reply.id and reply.id != "bad id with spaces"
    assert dict(await call.trailing_metadata())["x-request-id"] == reply.id


async def test_models_route_by_name(start_gateway: StartGateway) -> None:
    settings = make_settings(
        providers=[
            {"name": "a", "type": "local", "models": {"fast": "tiny"}},
            {"name": "b", "type": "local", "models": {"smart": "huge"}},
        ],
        default_model="fast",
    )
    gateway = await start_gateway(settings)
    fast = await gateway.stub.Complete(pb.CompleteRequest(prompt="x"))
    smart = await gateway.stub.Complete(pb.CompleteRequest(prompt="x", model="smart"))
    assert (fast.route.provider, fast.route.upstream_model, fast.model) == ("a", "tiny", "fast")
    assert (smart.route.provider, smart.route.upstream_model) == ("b", "huge")


async def test_health_is_serving_for_the_server_and_the_service(gateway: Gateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "hapax.v1.CompletionService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
