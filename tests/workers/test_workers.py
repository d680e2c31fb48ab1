"""`hapaxd serve --workers 2` as an operator runs it: the workers share the port and the calls,
one metrics endpoint sums their series, a worker that dies is restarted with its counts kept,
SIGHUP reloads every worker or none, SIGTERM drains every worker (health NOT_SERVING first), and
what the gateway shares through Redis (a rate limit, a stream cap, a budget, the response cache)
answers with two workers as with one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import signal
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from tests.admission.conftest import SEARCH_KEY, bearer
from tests.fakes.upstream import FakeUpstream, Hang, Reply
from tests.support.processes import GatewayProcess, free_port, gateway_process
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.usage.test_budgets import WORST
from tests.usage.test_redis_budgets import CONFIG as BUDGET_CONFIG

LOCAL = """\
server: {{address: "{{address}}", grace_period: 5s}}
metrics: {{address: "127.0.0.1:{metrics}"}}
reload: {{watch: false}}
providers:
  - {{name: local, type: local, models: {{"*": local}}{options}}}
default_model: default
health_check: {{enabled: false}}
auth: {{enabled: false}}
ledger: {{path: "{ledger}"}}
"""
SERVING = re.compile(r"worker (\d+) serving \(pid (\d+), metrics on 127\.0\.0\.1:(\d+)\)")


class Supervised:
    """A supervisor and what its log says of its workers."""

    def __init__(self, gateway: GatewayProcess, metrics: int) -> None:
        self.gateway = gateway
        self.metrics = metrics

    def workers(self) -> dict[int, tuple[int, int]]:
        """index -> (pid, metrics port), the latest each."""
        found: dict[int, tuple[int, int]] = {}
        for index, pid, port in SERVING.findall(self.gateway.output()):
            found[int(index)] = (int(pid), int(port))
        return found

    async def until_logged(self, pattern: str, count: int = 1, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while len(re.findall(pattern, self.gateway.output())) < count:
                assert self.gateway.alive, self.gateway.output()[-3000:]
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def supervised(
    text: str, directory: pathlib.Path, metrics: int = 0
) -> AsyncIterator[Supervised]:
    async with gateway_process(text, directory, args=("--workers", "2")) as gateway:
        running = Supervised(gateway, metrics)
        await running.until_logged(r"serving on \S+ with 2 worker processes")
        yield running


def local(directory: pathlib.Path, metrics: int, options: str = "") -> str:
    return LOCAL.format(metrics=metrics, ledger=directory / "usage.db", options=options)


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fresh(address: str) -> grpc.aio.Channel:
    """A channel with a connection of its own (grpc would otherwise share one connection among
    channels to one address through its global subchannel pool)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


COMPLETE_OK = ("hapax_grpc_requests_total", (("code", "OK"), ("method", "Complete")))


async def complete_on_fresh_connections(address: str, count: int) -> list[str]:
    """`count` Complete calls, each on a connection of its own (the kernel spreads new
    connections over the workers); each call's status code name."""

    async def one(i: int) -> str:
        async with fresh(address) as channel:
            try:
                await pb_grpc.CompletionServiceStub(channel).Complete(
                    pb.CompleteRequest(prompt=f"call {i}"), metadata=bearer(SEARCH_KEY), timeout=20
                )
            except grpc.aio.AioRpcError as error:
                return error.code().name
        return "OK"

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_workers_share_the_port_the_calls_and_one_metrics_endpoint(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    async with supervised(local(tmp_path, port), tmp_path, port) as running:
        assert await complete_on_fresh_connections(running.gateway.address, 40) == ["OK"] * 40
        workers = running.workers()
        assert sorted(workers) == [0, 1] and len({pid for pid, _ in workers.values()}) == 2
        each = [(await scrape(metrics)).get(COMPLETE_OK, 0) for _, metrics in workers.values()]
        assert sum(each) == 40 and min(each) > 0, each  # both workers took calls
        whole = await scrape(port)  # the supervisor's endpoint: the sum
        assert whole[COMPLETE_OK] == 40
        assert whole[("hapax_workers", ())] == 2
        assert whole[("hapax_worker_restarts_total", ())] == 0
        for _ in range(10):  # health answers the same from either worker
            async with fresh(running.gateway.address) as channel:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="hapax.v1.CompletionService")
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_worker_that_dies_is_restarted_and_its_counts_stay_in_the_sum(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    async with supervised(local(tmp_path, port), tmp_path, port) as running:
        assert await complete_on_fresh_connections(running.gateway.address, 30) == ["OK"] * 30
        before = await scrape(port)  # scraped now: what each worker counted so far
        assert before[COMPLETE_OK] == 30
        first, _ = running.workers()[0]
        os.kill(first, signal.SIGINT)  # a worker leaves Ctrl-C to its supervisor
        pid, _ = running.workers()[1]
        os.kill(pid, signal.SIGKILL)
        await running.until_logged(rf"worker 1 \(pid {pid}\) exited with status -9")
        await running.until_logged(SERVING.pattern, count=3)
        new_pid, _ = running.workers()[1]
        assert new_pid != pid
        assert running.workers()[0][0] == first and _alive(first)  # SIGINT did not stop it
        after = await scrape(port)
        assert after[COMPLETE_OK] == 30  # the dead worker's 30-something stayed in the sum
        assert after[("hapax_worker_restarts_total", ())] == 1
        assert after[("hapax_workers", ())] == 2
        assert await complete_on_fresh_connections(running.gateway.address, 10) == ["OK"] * 10
        assert (await scrape(port))[COMPLETE_OK] == 40


async def test_workers_whose_supervisor_is_killed_drain_and_exit(tmp_path: pathlib.Path) -> None:
    """SIGKILL leaves the supervisor no chance to signal: each worker sees its lifeline pipe
    close and stops by itself (after enough calls that a collection ran in each worker: the
    task reading the pipe must outlive the garbage collector)."""
    port = free_port()
    async with supervised(local(tmp_path, port), tmp_path, port) as running:
        assert await complete_on_fresh_connections(running.gateway.address, 60) == ["OK"] * 60
        pids = [pid for pid, _ in running.workers().values()]
        running.gateway.proc.kill()
        await running.gateway.proc.wait()
        for _ in range(200):  # 20 s at most
            if all(_gone(pid) for pid in pids):
                break
            await asyncio.sleep(0.1)
        assert all(_gone(pid) for pid in pids), running.gateway.output()[-3000:]


async def test_sighup_reloads_every_worker_and_an_invalid_file_is_refused_for_all(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    async with supervised(local(tmp_path, port), tmp_path, port) as running:
        path = tmp_path / "gateway.yaml"
        path.write_text(path.read_text().replace("grace_period: 5s", "grace_period: 4s"))
        running.gateway.proc.send_signal(signal.SIGHUP)
        await running.until_logged(r"config reloaded \(SIGHUP\)", count=2)
        path.write_text(path.read_text() + "\nproviders: [\n")
        running.gateway.proc.send_signal(signal.SIGHUP)
        await running.until_logged("config reload refused for every worker")
        await asyncio.sleep(0.5)
        output = running.gateway.output()
        assert len(re.findall(r"config reloaded \(SIGHUP\)", output)) == 2
        assert "refused, keeping the running settings" not in output  # no worker was asked
        assert await complete_on_fresh_connections(running.gateway.address, 4) == ["OK"] * 4


async def test_sigterm_drains_every_worker_health_not_serving_first(tmp_path: pathlib.Path) -> None:
    port = free_port()
    slow = ", options: {chunk_delay: 100ms}"
    async with supervised(local(tmp_path, port, slow), tmp_path, port) as running:
        address = running.gateway.address
        channels = [fresh(address) for _ in range(16)]
        try:
            watches = [
                health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest())
                for c in channels
            ]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            long = pb.StreamCompleteRequest(prompt=" ".join(["word"] * 20))  # about 2 s
            streams = [pb_grpc.CompletionServiceStub(c).StreamComplete(long) for c in channels]
            for stream in streams:
                assert (await stream.read()).delta
            active = ("hapax_grpc_active_requests", (("method", "StreamComplete"),))
            each = [(await scrape(m)).get(active, 0) for _, m in running.workers().values()]
            assert min(each) > 0, each  # streams in flight on both workers
            running.gateway.proc.send_signal(signal.SIGTERM)
            for watch in watches:  # every worker says NOT_SERVING while its streams go on
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            for stream in streams:  # and every stream in flight ends whole
                last = await stream.read()
                while True:
                    message = await stream.read()
                    if message is grpc.aio.EOF:
                        break
                    last = message
                assert last.finish_reason == pb.FINISH_REASON_STOP
                assert await stream.code() == grpc.StatusCode.OK
        finally:
            for channel in channels:
                await channel.close()
        code = await asyncio.wait_for(running.gateway.proc.wait(), 30)
        assert code == 0, running.gateway.output()[-3000:]
        for pid, _ in running.workers().values():
            assert _gone(pid)


def _alive(pid: int) -> bool:
    return not _gone(pid)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


SHARED = """\
server: {{address: "{{address}}", grace_period: 2s}}
metrics: {{enabled: false}}
logging: {{level: info}}
providers:
  - {{name: up, type: openai, base_url: "{base_url}", models: {{"*": gpt-test}}}}
default_model: default
router: {{retry: {{max_attempts: 1}}}}
health_check: {{enabled: false}}
auth:
  keys:
    - {{id: search, sha256: "{digest}", {limit}}}
rate_limit: {{backend: redis, redis_url: "{url}"}}
ledger: {{path: "{ledger}"}}
cache: {{backend: redis, redis_url: "{url}", near_ttl: 0, models: {{"cached": {{}}}}}}
"""


def shared(fake: FakeUpstream, redis: RedisServer, directory: pathlib.Path, limit: str) -> str:
    return SHARED.format(
        base_url=fake.base_url("openai"),
        digest=config.digest(SEARCH_KEY),
        limit=limit,
        url=redis.url,
        ledger=directory / "usage.db",
    )


async def test_a_rate_limit_and_the_cache_answer_with_two_workers_as_with_one(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Reply(text="four"))
    text = shared(fake_upstream, redis_server, tmp_path, "requests_per_minute: 10")
    async with supervised(text, tmp_path) as running:
        codes = await complete_on_fresh_connections(running.gateway.address, 30)
        assert codes.count("OK") in (10, 11), codes  # 10, and at most one refill in the run
        assert codes.count("RESOURCE_EXHAUSTED") == 30 - codes.count("OK")
    (tmp_path / "cache").mkdir()
    text = shared(fake_upstream, redis_server, tmp_path / "cache", "requests_per_minute: 1000")
    async with supervised(text, tmp_path / "cache") as running:
        before = fake_upstream.count("openai.chat")

        async def ask() -> str:
            async with fresh(running.gateway.address) as channel:
                call = pb_grpc.CompletionServiceStub(channel).Complete(
                    pb.CompleteRequest(prompt="two and two?", model="cached", temperature=0),
                    metadata=bearer(SEARCH_KEY),
                )
                assert (await call).text == "four"
                return dict(await call.trailing_metadata())["x-hapax-cache"]

        assert await ask() == "miss"
        await asyncio.sleep(0.3)  # stored in the background
        said = [await ask() for _ in range(12)]  # new connections: on both workers
        assert said == ["hit"] * 12
        assert fake_upstream.count("openai.chat") == before + 1


async def test_a_stream_cap_holds_across_two_workers(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    fake_upstream.set_default(Hang(seconds=3.0, then=Reply(text="late")))
    text = shared(fake_upstream, redis_server, tmp_path, "max_concurrent_streams: 2")
    async with supervised(text, tmp_path) as running:
        channels = [fresh(running.gateway.address) for _ in range(8)]
        try:
            calls = [
                pb_grpc.CompletionServiceStub(c).StreamComplete(
                    pb.StreamCompleteRequest(prompt="hold"), metadata=bearer(SEARCH_KEY)
                )
                for c in channels
            ]

            async def outcome(call: object) -> str:
                try:
                    async for _ in call:  # type: ignore[attr-defined]
                        pass
                except grpc.aio.AioRpcError as error:
                    return error.code().name
                return "OK"

            codes = await asyncio.gather(*(outcome(c) for c in calls))
        finally:
            for channel in channels:
                await channel.close()
        assert sorted(codes) == ["OK"] * 2 + ["RESOURCE_EXHAUSTED"] * 6, codes


async def test_a_budget_holds_across_two_workers(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """Room for ten worst cases; thirty calls at once on thirty connections over two workers,
    each held long enough that all are in flight together: ten are admitted."""
    fake_upstream.set_default(Hang(seconds=1.0, then=Reply(prompt_tokens=4, completion_tokens=1)))
    text = BUDGET_CONFIG.format(
        base_url=fake_upstream.base_url("openai"),
        digest=config.digest(SEARCH_KEY),
        path=tmp_path / "usage.db",
        redis_url=redis_server.url,
        money=Decimal(WORST * 10) / 1_000_000_000,
    )
    async with supervised(text, tmp_path) as running:

        async def one(i: int) -> str:
            async with fresh(running.gateway.address) as channel:
                request = pb.CompleteRequest(prompt=f"call{i:03d}"[-4:], max_tokens=96)
                try:
                    await pb_grpc.CompletionServiceStub(channel).Complete(
                        request, metadata=bearer(SEARCH_KEY)
                    )
                except grpc.aio.AioRpcError as error:
                    return error.code().name
            return "OK"

        codes = await asyncio.gather(*(one(i) for i in range(30)))
    assert codes.count("OK") == 10 and codes.count("RESOURCE_EXHAUSTED") == 20, codes


pytestmark = pytest.mark.timeout(120)
