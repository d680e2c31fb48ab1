"""Two gateway processes (`hapaxd serve`) writing their usage ledgers to one PostgreSQL database,
a real server started on loopback: every call is one row, none lost, none doubled (a request id
both replicas saw is written once), and the daily rollups agree with the rows."""

from __future__ import annotations

import asyncio
import pathlib
import signal
from typing import Any

import grpc
import psycopg

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401  (fixtures)
from tests.support.processes import GatewayProcess, gateway_process

CONFIG = """\
server: {{address: "{{address}}", grace_period: 5s}}
metrics: {{enabled: false}}
providers:
  - {{name: local, type: local, models: {{"*": local}}}}
default_model: default
auth: {{enabled: false}}
prices: {{models: {{local: {{prompt: 1, completion: 2}}}}}}
ledger:
  backend: postgres
  postgres_url: {url}
  path: {path}
  flush_interval: 100ms
"""


async def calls(gateway: GatewayProcess, prefix: str, count: int) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)

        async def one(i: int) -> None:
            request_id = (("x-request-id", f"{prefix}-{i:03d}"),)
            await stub.Complete(pb.CompleteRequest(prompt=f"call {i}"), metadata=request_id)

        await asyncio.gather(*(one(i) for i in range(count)))
        await stub.Complete(pb.CompleteRequest(prompt="both"), metadata=(("x-request-id", "both"),))


async def stop(gateway: GatewayProcess) -> None:
    """SIGTERM, as an orchestrator stops it: the gateway drains and writes its ledger."""
    gateway.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0, gateway.output()[-2000:]


async def test_two_gateways_one_database_every_row_once(
    postgres_dsn: str,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    configs = [CONFIG.format(url=postgres_dsn, path=d / "usage.db") for d in dirs]
    async with (
        gateway_process(configs[0], dirs[0]) as first,
        gateway_process(configs[1], dirs[1]) as second,
    ):
        await asyncio.gather(calls(first, "a", 60), calls(second, "b", 60))
        await asyncio.gather(stop(first), stop(second))

    with psycopg.connect(postgres_dsn) as db:
        ids = [r[0] for r in db.execute("SELECT request_id FROM calls")]
        rollup: Any = db.execute("SELECT SUM(calls), SUM(cost_nanos) FROM rollups").fetchone()
        cost: Any = db.execute("SELECT SUM(cost_nanos) FROM calls").fetchone()
    assert len(ids) == len(set(ids)) == 121  # 60 + 60 + one id both saw
    assert {i for i in ids if i.startswith("a-")} == {f"a-{i:03d}" for i in range(60)}
    assert "both" in ids
    assert rollup[0] == 121 and rollup[1] == cost[0] > 0
