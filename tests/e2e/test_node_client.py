"""A Node.js application (tests/node/client.js, @grpc/grpc-js + @grpc/proto-loader from tools/)
calls the gateway through stubs loaded from protos/: the contract works outside Python."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support.processes import run

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tools" / "node_modules"
CLIENT = ROOT / "tests" / "node" / "client.js"


async def run_client(address: str, prompt: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (NODE_MODULES / package / "package.json").exists():
            pytest.fail(f"{package} is missing from tools/node_modules: run `make tools`")
    code, out, err = await run(
        node,
        str(CLIENT),
        address,
        prompt,
        within=60,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    assert code == 0, f"node client exited {code}:\n{err}"
    result: dict[str, Any] = json.loads(out)
    return result


async def test_node_client_completes_streams_and_sees_invalid_argument(gateway: Gateway) -> None:
    result = await run_client(gateway.address, "hello from node")

    unary = result["unary"]
    assert unary["text"].endswith("You said: hello from node")
    assert unary["finishReason"] == "FINISH_REASON_STOP"
    assert unary["route"]["provider"] == "local"
    assert unary["id"] == "node-client-1"  # the x-request-id metadata the client sent
    assert unary["usage"]["totalTokens"] == (
        unary["usage"]["promptTokens"] + unary["usage"]["completionTokens"]
    )

    stream = result["stream"]
    assert len(stream) > 2
    assert "".join(m["delta"] for m in stream).endswith("You said: hello from node")
    assert stream[-1]["finishReason"] == "FINISH_REASON_STOP"
    assert all(m["finishReason"] == "FINISH_REASON_UNSPECIFIED" for m in stream[:-1])
    assert len({m["id"] for m in stream}) == 1

    assert result["invalid"]["status"] == "INVALID_ARGUMENT"
    assert result["invalid"]["code"] == 3
