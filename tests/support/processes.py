"""Running a peer program (grpcurl, node, the hapaxd CLI, h2load) from a test without blocking the
event loop the gateway under test runs on, and a gateway in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def run(
    *argv: str,
    within: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a program run to its end, killed after `within` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- a gateway in its own process ----------------------------------------------------------------

_SCRIPT = pathlib.Path(sys.executable).parent / "hapaxd"
HAPAXD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hapaxd"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    """`hapaxd serve` as an operator runs it, so that a crash (a segfault in grpc's C core) is
    seen as the process ending, and its memory can be read from /proc."""

    def __init__(
        self, proc: asyncio.subprocess.Process, address: str, log: pathlib.Path | None = None
    ) -> None:
        self.proc = proc
        self.address = address
        self.log = log

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def output(self) -> str:
        """What the process wrote, when it writes to a file."""
        return self.log.read_text(errors="replace") if self.log is not None else ""

    async def wait_serving(self, within: float = 30.0) -> None:
        """Health Check with wait_for_ready; fails fast if the process dies first."""
        options = [
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 250),
        ]
        async with grpc.aio.insecure_channel(self.address, options=options) as channel:
            check = asyncio.ensure_future(
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=within, wait_for_ready=True
                )
            )
            exited = asyncio.ensure_future(self.proc.wait())
            done, _ = await asyncio.wait({check, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                check.cancel()
                raise AssertionError(
                    f"hapaxd serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            exited.cancel()
            assert check.result().status == health_pb2.HealthCheckResponse.SERVING


@contextlib.asynccontextmanager
async def gateway_process(
    config_yaml: str,
    directory: pathlib.Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[GatewayProcess]:
    """Serve `config_yaml`, in which `{address}` is replaced by a free 127.0.0.1 port; `args`
    go on `hapaxd serve`'s command line (`--workers 2`)."""
    address = f"127.0.0.1:{free_port()}"
    config = directory / "gateway.yaml"
    config.write_text(config_yaml.replace("{address}", address))
    log = directory / "gateway.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *HAPAXD,
            "serve",
            "--config",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    gateway = GatewayProcess(proc, address, log)
    try:
        await gateway.wait_serving()
        yield gateway
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
