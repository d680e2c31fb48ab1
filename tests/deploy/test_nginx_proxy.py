"""A real L7 proxy in front of two gateway processes, as a mesh or an ingress would be: Debian's
nginx running deploy/nginx/hapax-grpc.conf (grpc_pass to two `hapaxd serve` replicas that share
one redis-server). Calls spread over both replicas, also those of one client connection; a
replica stopped with SIGTERM loses no call that nginx can retry, and none at all when it is
taken out of nginx first; connections the replicas age out (max_connection_age) lose no call;
a per-key rate limit holds across the two."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from tests.admission.conftest import SEARCH_KEY, bearer
from tests.deploy.nginx import TEMPLATE, Nginx, check_config, nginx_process, render
from tests.fakes.upstream import FakeUpstream, Hang, Reply
from tests.support.processes import GatewayProcess, gateway_process
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.status_details import details_of

pytestmark = [pytest.mark.external, pytest.mark.slow]

CHAT = "openai.chat"
GATEWAY = """\
server: {{address: "{{address}}", grace_period: 5s{server}}}
metrics: {{enabled: false}}
logging: {{level: warning}}
providers:
  - {{name: up, type: openai, base_url: "{base_url}", models: {{"*": gpt-test}}}}
default_model: default
router: {{retry: {{max_attempts: 1}}}}
health_check: {{enabled: false}}
auth:
  keys:
    - {{id: search, owner: search-team, sha256: "{digest}"{limits}}}
rate_limit: {{backend: redis, redis_url: "{redis_url}"}}
ledger: {{path: "{ledger}"}}
"""


@dataclasses.dataclass
class Deployment:
    nginx: Nginx
    replicas: list[GatewayProcess]
    fakes: list[FakeUpstream]  # each replica's own upstream, so calls are counted per replica

    def served(self) -> list[int]:
        """Calls each replica sent to its upstream: the calls it ran."""
        return [fake.count(CHAT) for fake in self.fakes]


@contextlib.asynccontextmanager
async def behind_nginx(
    directory: pathlib.Path,
    redis_url: str,
    limits: str = "",
    server: str = "",
    nginx_log: str = "notice",
) -> AsyncIterator[Deployment]:
    """Two replicas, each on a fake upstream of its own, sharing `redis_url`, behind nginx;
    `limits` and `server` are added to the key's and the server's settings. Everything is
    stopped on the way out, also when the test fails."""
    async with contextlib.AsyncExitStack() as stack:
        fakes = [await stack.enter_async_context(FakeUpstream()) for _ in range(2)]
        replicas = []
        for name, fake in zip("ab", fakes, strict=True):
            (directory / name).mkdir()
            text = GATEWAY.format(
                server=server,
                base_url=fake.base_url("openai"),
                digest=config.digest(SEARCH_KEY),
                limits=limits,
                redis_url=redis_url,
                ledger=directory / name / "usage.db",
            )
            replicas.append(
                await stack.enter_async_context(gateway_process(text, directory / name))
            )
        nginx = await stack.enter_async_context(
            nginx_process([r.address for r in replicas], directory / "nginx", nginx_log)
        )
        yield Deployment(nginx, replicas, fakes)
        for fake in fakes:
            assert not fake.shape_errors, fake.shape_errors


def complete(stub: pb_grpc.CompletionServiceStub, i: int) -> grpc.aio.UnaryUnaryCall:
    request = pb.CompleteRequest(prompt=f"call {i}")
    return stub.Complete(request, metadata=bearer(SEARCH_KEY), timeout=20)


async def steady_load(
    address: str,
    total: int,
    concurrency: int = 8,
    at: dict[int, Callable[[], Coroutine[Any, Any, None]]] | None = None,
    outcomes: list[str] | None = None,
) -> list[str]:
    """`total` Complete calls, `concurrency` at a time over two client connections; "OK" or the
    error of each, in the order they ended (appended to `outcomes` as they end). `at[n]` is
    started once `n` calls have ended, the calls going on meanwhile, and awaited at the end."""
    outcomes = [] if outcomes is None else outcomes
    started: list[asyncio.Task[None]] = []
    pending = iter(range(total))

    async def worker(stub: pb_grpc.CompletionServiceStub) -> None:
        for i in pending:
            try:
                answer = await complete(stub, i)
                outcomes.append("OK" if answer.text == "fine" else f"text {answer.text!r}")
            except grpc.aio.AioRpcError as error:
                outcomes.append(f"{error.code().name}: {error.details()}")
            if at and len(outcomes) in at:
                started.append(asyncio.create_task(at.pop(len(outcomes))()))

    async with (
        grpc.aio.insecure_channel(address) as one,
        grpc.aio.insecure_channel(address) as two,
    ):
        stubs = [pb_grpc.CompletionServiceStub(c) for c in (one, two)]
        async with asyncio.timeout(60):
            await asyncio.gather(*(worker(stubs[n % 2]) for n in range(concurrency)))
            await asyncio.gather(*started)
    assert len(outcomes) == total
    return outcomes


async def test_the_template_is_valid_nginx(tmp_path: pathlib.Path) -> None:
    code, said = await check_config(render(["127.0.0.1:1", "127.0.0.1:2"], 3), tmp_path)
    assert code == 0, said
    assert "grpc_pass grpc://hapax;" in TEMPLATE.read_text()


async def test_calls_spread_over_both_replicas_also_on_one_client_connection(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    async with behind_nginx(tmp_path, redis_server.url) as deployed:
        async with grpc.aio.insecure_channel(deployed.nginx.address) as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            for i in range(20):  # one connection, one call at a time
                assert (await complete(stub, i)).text
        assert deployed.served() == [10, 10], "round robin per call, not per connection"

        async def client(n: int) -> None:
            async with grpc.aio.insecure_channel(deployed.nginx.address) as channel:
                stub = pb_grpc.CompletionServiceStub(channel)
                answers = await asyncio.gather(*(complete(stub, 100 * n + i) for i in range(10)))
                assert all(a.text for a in answers)

        await asyncio.gather(*(client(n) for n in range(4)))  # four connections, 40 calls at once
        a, b = deployed.served()
        assert a + b == 60 and a >= 25 and b >= 25, (a, b)
        calls = await deployed.nginx.logged(60)
        assert all(c.ok for c in calls)
        assert sorted({c.upstreams[0] for c in calls}) == sorted(
            r.address for r in deployed.replicas
        )


async def test_a_replica_stopped_with_sigterm_loses_no_call_nginx_can_retry(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """300 calls, 8 at a time (300 ms each at A's upstream, 50 ms at B's, so that A is always
    running some); after the 100th has ended replica A gets SIGTERM while nginx still sends it
    calls. A closes its listener, so every call nginx had not yet sent it is moved to B
    (`grpc_next_upstream error`); the calls A was running finish; A exits 0.

    nginx cannot move a call once it has sent it (grpc_pass streams the request, unbuffered).
    The calls that had reached A but not yet its handlers when its gRPC server began shutting
    down, and those nginx sent it before A's GOAWAY arrived, are answered CANCELLED by grpc's
    core (or reset: UNAVAILABLE) without being run: a few, none at all in some runs. They
    reach neither upstream, so a client may send them again; the next test shows the procedure
    that loses none."""
    total, concurrency = 300, 8
    async with behind_nginx(tmp_path, redis_server.url) as deployed:
        for fake, seconds in zip(deployed.fakes, (0.3, 0.05), strict=True):
            fake.set_default(Hang(seconds=seconds, then=Reply(text="fine")))
        a, b = deployed.replicas
        running_at_sigterm: list[int] = []

        async def stop_a() -> None:
            running_at_sigterm.append(sum(not r.finished for r in deployed.fakes[0].requests))
            a.proc.send_signal(signal.SIGTERM)

        began = time.monotonic()
        outcomes = await steady_load(deployed.nginx.address, total, concurrency, {100: stop_a})
        elapsed = time.monotonic() - began
        exit_code = await asyncio.wait_for(a.proc.wait(), 30)
        failed = [o for o in outcomes if o != "OK"]
        calls = await deployed.nginx.logged(total)
        moved = [c for c in calls if len(c.upstreams) > 1]
        not_ok = [c for c in calls if not c.ok]
        said = (
            f"{len(failed)} of {total} failed in {elapsed:.1f}s: {failed}; nginx moved "
            f"{len(moved)}; A was running {running_at_sigterm} at SIGTERM; served "
            f"{deployed.served()}; not answered: {not_ok}\n{deployed.nginx.errors()[-3000:]}"
        )
        assert exit_code == 0, a.output()[-2000:]
        assert b.alive
        # Calls nginx had not sent to A yet: moved on to B and answered.
        assert moved, said
        assert all(
            c.ok and c.upstreams == [a.address, b.address] and c.tried == ["502", "200"]
            for c in moved
        ), said
        # The calls A was running when it got SIGTERM: every one finished (grace_period).
        assert running_at_sigterm[0] >= 1, said
        assert all(r.finished and not r.disconnected for r in deployed.fakes[0].requests)
        # What nginx could not move: calls already on A, failed at once and cleanly, not run.
        assert len(failed) == len(not_ok) <= concurrency, said
        assert all(o.startswith(("CANCELLED:", "UNAVAILABLE:")) for o in failed), said
        assert all(c.upstreams == [a.address] for c in not_ok), said
        assert sum(deployed.served()) == outcomes.count("OK"), "a failed call was run: " + said


async def test_a_replica_taken_out_of_nginx_then_stopped_with_sigterm_loses_no_call(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """How to stop a replica behind nginx without failing a call: mark it `down`, reload nginx
    (its old worker finishes the calls it had, A's included), and only then SIGTERM the replica.
    400 calls, 8 at a time, throughout: not one fails, and A gets none after the reload."""
    total, concurrency = 400, 8
    async with behind_nginx(tmp_path, redis_server.url) as deployed:
        for fake in deployed.fakes:
            fake.set_default(Hang(seconds=0.05, then=Reply(text="fine")))
        a, b = deployed.replicas
        ended_at_sigterm: list[int] = []
        served_by_a: list[int] = []
        outcomes: list[str] = []

        async def take_out_and_stop_a() -> None:
            await deployed.nginx.reload(down=[a.address])
            served_by_a.append(deployed.served()[0])
            ended_at_sigterm.append(len(outcomes))
            a.proc.send_signal(signal.SIGTERM)

        await steady_load(
            deployed.nginx.address, total, concurrency, {50: take_out_and_stop_a}, outcomes
        )
        exit_code = await asyncio.wait_for(a.proc.wait(), 30)
        failed = [o for o in outcomes if o != "OK"]
        assert not failed, f"{failed}\n{deployed.nginx.errors()[-3000:]}"
        assert all(c.ok for c in await deployed.nginx.logged(total))
        assert exit_code == 0, a.output()[-2000:]
        assert ended_at_sigterm[0] <= total - 100, "the load went on well past the SIGTERM"
        assert deployed.served()[0] == served_by_a[0], "A got calls after the reload"
        assert sum(deployed.served()) == total and b.alive


async def test_connections_the_replicas_age_out_lose_no_call(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """server.max_connection_age closes each connection with grpc's graceful GOAWAY (calls that
    arrive before its final GOAWAY still run); nginx stops reusing the connection and opens
    another. With an age of 200 ms every upstream connection of nginx is replaced many times
    under 300 calls, and not one call fails."""
    aging = ", max_connection_age: 200ms, max_connection_age_grace: 5s"
    async with behind_nginx(
        tmp_path, redis_server.url, server=aging, nginx_log="debug"
    ) as deployed:
        for fake in deployed.fakes:
            fake.set_default(Hang(seconds=0.05, then=Reply(text="fine")))
        outcomes = await steady_load(deployed.nginx.address, 300, 8)
        assert outcomes.count("OK") == 300, [o for o in outcomes if o != "OK"]
        assert sum(deployed.served()) == 300
        log = deployed.nginx.errors()
        connects = sum(log.count(f"connect to {r.address}") for r in deployed.replicas)
        # 8 calls at a time need about 8 connections; aged out, nginx made many more.
        assert connects >= 40, connects


async def test_a_rate_limit_holds_across_both_replicas(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """10 requests a minute for the key, kept in Redis: of 30 calls through nginx, alternating
    between the replicas, exactly 10 are answered (by the two together) and 20 refused with
    RESOURCE_EXHAUSTED, the rich status intact through nginx. The bucket regains one call in
    6 s, so the count is exact while the 30 take less than that."""
    limits = ", requests_per_minute: 10"
    async with behind_nginx(tmp_path, redis_server.url, limits=limits) as deployed:
        codes: list[str] = []
        began = time.monotonic()
        async with grpc.aio.insecure_channel(deployed.nginx.address) as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            for i in range(30):
                try:
                    assert (await complete(stub, i)).text
                    codes.append("OK")
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code().name)
                    got = details_of(error)
                    assert got.code is grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    assert got.info is not None and got.info.reason == "RATE_LIMITED"
                    assert got.info.metadata["limit"] == "requests_per_minute"
                    assert got.retry is not None
        elapsed = time.monotonic() - began
        assert elapsed < 5.0, f"took {elapsed:.1f}s: the bucket may have regained a call"
        assert codes.count("OK") == 10 and codes.count("RESOURCE_EXHAUSTED") == 20, codes
        a, b = deployed.served()
        assert a + b == 10 and a > 0 and b > 0, "both replicas admitted calls of the one limit"
        calls = await deployed.nginx.logged(30)
        replicas = [r.address for r in deployed.replicas]
        assert [sum(c.upstreams == [r] for c in calls) for r in replicas] == [15, 15]
        refused = {c.upstreams[0] for c in calls if c.grpc_status == "8"}  # RESOURCE_EXHAUSTED
        assert refused == set(replicas), "both replicas refused calls of the one limit"
