"""The `hapaxd` command as an operator runs it: check-config, healthcheck and serve, each as a real
subprocess of the installed console script. Subprocesses that talk to a gateway in this event
loop are asyncio subprocesses, so the loop keeps serving while they run."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Gateway
from tests.processes import run

_SCRIPT = pathlib.Path(sys.executable).parent / "hapaxd"
HAPAXD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hapaxd"]

GOOD = """\
server:
  address: 127.0.0.1:50051
  grace_period: 1s
metrics:
  enabled: false
logging:
  level: info
  format: text
providers:
  - name: local
    type: local
    models: {"*": local}
  - name: ollama
    type: ollama
    base_url: http://127.0.0.1:11434
    models: {llama: llama3.2}
default_model: default
health_check:
  enabled: false
"""


def write(tmp_path: pathlib.Path, text: str, name: str = "hapax.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def check_config(path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HAPAXD, "check-config", path],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def run_cli(*args: str, within: float = 30.0) -> tuple[int, str, str]:
    return await run(*HAPAXD, *args, within=within)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- check-config ------------------------------------------------------------------------------


def test_check_config_accepts_a_good_file(tmp_path: pathlib.Path) -> None:
    result = check_config(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "local (local), ollama (ollama)" in result.stdout


def test_check_config_names_the_bad_key_and_exits_2(tmp_path: pathlib.Path) -> None:
    result = check_config(write(tmp_path, GOOD.replace("http://127.0.0.1:11434", "nope")))
    assert result.returncode == 2
    assert "providers[1].base_url: not a URL" in result.stderr


def test_check_config_rejects_a_file_that_is_not_there(tmp_path: pathlib.Path) -> None:
    result = check_config(str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr


def test_check_config_expands_environment_variables(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        """\
        metrics: {enabled: false}
        providers:
          - name: ${HAPAX_TEST_PROVIDER}
            type: local
            models: {"*": local}
        default_model: ${HAPAX_TEST_MODEL:-fallback-model}
        """,
    )
    env = {"HAPAX_TEST_PROVIDER": "from-env"}
    result = check_config(path, env)
    assert result.returncode == 0, result.stderr
    assert "providers from-env (local); default model fallback-model" in result.stdout

    result = check_config(path, {**env, "HAPAX_TEST_MODEL": "chosen"})
    assert result.returncode == 0, result.stderr
    assert "default model chosen" in result.stdout

    unset = {k: v for k, v in os.environ.items() if k != "HAPAX_TEST_PROVIDER"}
    result = subprocess.run(
        [*HAPAXD, "check-config", path],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=unset,
        check=False,
    )
    assert result.returncode == 2
    assert "environment variable HAPAX_TEST_PROVIDER is not set" in result.stderr


# --- healthcheck -------------------------------------------------------------------------------


async def test_healthcheck_against_a_running_gateway_prints_serving(gateway: Gateway) -> None:
    code, out, err = await run_cli("healthcheck", gateway.address)
    assert code == 0, err
    assert out.strip() == "SERVING"


async def test_healthcheck_against_a_closed_port_exits_1() -> None:
    code, out, err = await run_cli("healthcheck", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1
    assert "SERVING" not in out
    assert "unhealthy" in err


# --- serve -------------------------------------------------------------------------------------


async def wait_until_serving(address: str, proc: asyncio.subprocess.Process, within: float) -> None:
    """Health Check with wait_for_ready: returns once the server answers SERVING; fails fast if the
    process dies first. No sleeps: gRPC retries the connection itself, with a short backoff."""
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 250)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = asyncio.ensure_future(
            stub.Check(health_pb2.HealthCheckRequest(), timeout=within, wait_for_ready=True)
        )
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({check, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited in done:
            check.cancel()
            pytest.fail(f"hapaxd serve exited early with {proc.returncode}")
        exited.cancel()
        reply = check.result()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_serve_starts_answers_health_and_exits_0_on_sigterm(tmp_path: pathlib.Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = write(tmp_path, GOOD.replace("127.0.0.1:50051", address))
    log_path = tmp_path / "hapaxd.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *HAPAXD,
            "serve",
            "--config",
            config,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            await wait_until_serving(address, proc, within=30)
        except BaseException:
            print(log_path.read_text())
            raise
        code, out, err = await run_cli("healthcheck", address)
        assert (code, out.strip()) == (0, "SERVING"), err

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 15)
        elapsed = time.monotonic() - started
        assert returncode == 0, log_path.read_text()
        assert elapsed < 10, f"took {elapsed:.1f}s to stop after SIGTERM"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_on_the_built_in_default_logs_its_providers_and_never_the_key() -> None:
    address = f"127.0.0.1:{free_port()}"
    key = "sk-cli-test-key-never-logged-0123"
    env = {
        **os.environ,
        "OPENAI_API_KEY": key,
        "HAPAX_GRPC_ADDRESS": address,
        "HAPAX_METRICS_ADDRESS": "127.0.0.1:0",
    }
    env.pop("HAPAX_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        *HAPAXD,
        "serve",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until_serving(address, proc, within=30)
        proc.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(proc.communicate(), 15))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "from providers: openai (openai), local (local)" in output
    assert key not in output
