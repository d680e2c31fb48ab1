"""Debian's nginx as a process of the test's own: deploy/nginx/hapax-grpc.conf rendered with the
replicas' addresses and a free loopback port, inside a main config whose pid file, logs and temp
directories are all under one prefix directory (nothing of the system's nginx is touched)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
from collections.abc import AsyncIterator, Collection, Sequence

import pytest

from tests.support.processes import free_port

TEMPLATE = pathlib.Path(__file__).parents[2] / "deploy" / "nginx" / "hapax-grpc.conf"
# What the template ships with, replaced by the test's addresses.
LISTEN = "listen 50050 http2;"
REPLICAS = ("127.0.0.1:50051", "127.0.0.1:50052")

# One worker, so that one round robin places every call. One access log line per call: the
# replica (several, comma-separated, when nginx moved the call on), what each answered, the HTTP
# status, and the call's grpc-status (in the headers when answered without a message, else in
# the trailers).
MAIN = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log {level};
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    log_format calls '$upstream_addr|$upstream_status|$status|'
                     '$upstream_http_grpc_status|$upstream_trailer_grpc_status';
    access_log {prefix}/access.log calls;
    include {prefix}/hapax-grpc.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if found is None:
        pytest.fail("nginx is not installed (Debian: the nginx package; `make tools`)")
    return found


def render(replicas: Sequence[str], port: int, down: Collection[str] = ()) -> str:
    """The template with its example replicas and listen port replaced; the replicas in `down`
    marked `down` (taken out of the balancing, as an operator does before stopping one)."""
    text = TEMPLATE.read_text()
    assert len(replicas) == len(REPLICAS)
    listen = (LISTEN, f"listen 127.0.0.1:{port} http2;")
    for shipped, address in (listen, *zip(REPLICAS, replicas, strict=True)):
        assert text.count(shipped) == 1, f"the template should say {shipped!r} once"
        text = text.replace(shipped, address)
    for address in down:
        text = text.replace(f"server {address} ", f"server {address} down ")
    return text


@dataclasses.dataclass
class Call:
    """One line of the access log."""

    upstreams: list[str]  # the replicas tried, in order (more than one: nginx moved the call on)
    tried: list[str]  # what each answered (502: could not connect)
    status: str  # HTTP status to the client
    grpc_status: str  # "-" when there was none (an HTTP error from nginx itself)

    @property
    def ok(self) -> bool:
        return self.status == "200" and self.grpc_status == "0"


class Nginx:
    """A running nginx: its address, what it logged, and reload()."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        prefix: pathlib.Path,
        replicas: Sequence[str],
    ) -> None:
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.prefix = prefix
        self.replicas = list(replicas)

    def errors(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def calls(self) -> list[Call]:
        path = self.prefix / "access.log"
        found = []
        for line in path.read_text().splitlines() if path.exists() else ():
            upstream, tried, status, in_headers, in_trailers = line.split("|")
            found.append(
                Call(
                    upstream.split(", "),
                    tried.split(", "),
                    status,
                    in_headers if in_headers != "-" else in_trailers,
                )
            )
        return found

    async def logged(self, count: int, within: float = 5.0) -> list[Call]:
        """The access log once it has `count` lines: nginx writes a call's line after the
        client has its answer."""
        async with asyncio.timeout(within):
            while len(calls := self.calls()) < count:  # noqa: ASYNC110  (a file, polled)
                await asyncio.sleep(0.02)
        assert len(calls) == count, calls
        return calls

    async def reload(self, down: Collection[str] = (), within: float = 15.0) -> None:
        """Render the template again (with `down` taken out), SIGHUP the master, and wait until
        the old worker has finished its calls and exited: from then on only the new
        configuration routes calls."""
        (self.prefix / "hapax-grpc.conf").write_text(render(self.replicas, self.port, down))
        exited = self.errors().count(" exited with code ")
        self.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(within):
            while self.errors().count(" exited with code ") == exited:
                assert self.proc.returncode is None, self.errors()[-2000:]
                await asyncio.sleep(0.02)
        assert "reconfiguring" in self.errors()


def _write(site: str, prefix: pathlib.Path, level: str) -> pathlib.Path:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "hapax-grpc.conf").write_text(site)
    conf = prefix / "nginx.conf"
    conf.write_text(MAIN.format(prefix=prefix, level=level))
    return conf


async def check_config(site: str, prefix: pathlib.Path) -> tuple[int, str]:
    """`nginx -t` of `site` inside the test's main config: (exit code, what it said)."""
    conf = _write(site, prefix, "notice")
    proc = await asyncio.create_subprocess_exec(
        nginx_binary(), "-t", "-p", str(prefix), "-c", str(conf),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@contextlib.asynccontextmanager
async def nginx_process(
    replicas: Sequence[str], prefix: pathlib.Path, level: str = "notice"
) -> AsyncIterator[Nginx]:
    """nginx in the foreground (`daemon off`) serving the rendered template, its error log at
    `level` (debug: every upstream connect and GOAWAY); stopped on the way out (SIGQUIT, then
    SIGKILL to its process group), also when the test fails."""
    port = free_port()
    conf = _write(render(replicas, port), prefix, level)
    with (prefix / "stderr.log").open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            nginx_binary(), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a process group of its own: the master and its worker
        )  # fmt: skip
    nginx = Nginx(proc, port, prefix, replicas)
    try:
        await _wait_listening(nginx)
        yield nginx
    finally:
        await _stop(proc)


async def _wait_listening(nginx: Nginx, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if nginx.proc.returncode is not None:
                said = (nginx.prefix / "stderr.log").read_text(errors="replace")
                raise AssertionError(f"nginx exited with {nginx.proc.returncode}: {said}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", nginx.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)  # graceful: the worker finishes its calls
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
    # Whatever is left of the process group it leads (a worker whose master died), and the
    # master itself if it did not stop.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
