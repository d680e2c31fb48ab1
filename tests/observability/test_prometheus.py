"""Against the real thing: Debian's prometheus scrapes the side port and PromQL returns the counts;
promtool checks and unit-tests the alert rules; every dashboard and alert query is valid PromQL
over metrics the gateway exports. prometheus and promtool must be installed (`make tools`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability.metrics import Metrics
from tests.observability.conftest import Observe, settings_with
from tests.support.logcapture import METRICS_TOKEN

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "hapax.json"
DEADLINE = 30.0


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `make tools` (apt-get install prometheus)"
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_the_alert_rules() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert {"HapaxHighErrorRate", "HapaxCircuitBreakerOpen"} <= tested


def test_example_scrape_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_exprs() -> dict[str, str]:
    board = json.loads(DASHBOARD.read_text())
    return {
        f"{p['title']}/{t['refId']}": t["expr"]
        for p in board["panels"]
        for t in p.get("targets", [])
    }


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix
        for family in Metrics(settings_with()).registry.collect()
        for suffix in suffixes[family.type]
    }
    exprs = {**alert_exprs(), **dashboard_exprs()}
    used = {name for e in exprs.values() for name in re.findall(r"\bhapax_[a-z_]+", e)}
    assert used - exported == set()
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "request rate",
        "error",
        "latency",
        "first token",
        "tokens",
        "circuit breaker",
        "health",
    ):
        assert topic in titles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target_port: int, token: str) -> AsyncIterator[str]:
    """A real Prometheus on loopback scraping the side port every second; yields its URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "hapax",
                "authorization": {"type": "Bearer", "credentials": token},
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/v1/query", params={"query": promql}) as response:
        return await response.json()  # type: ignore[no-any-return]


async def poll_value(
    session: aiohttp.ClientSession, url: str, promql: str, expected: float
) -> None:
    """Until `promql` returns one sample equal to `expected`, within DEADLINE seconds."""
    last: Any = None
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    last = await query(session, url, promql)
                    result = last.get("data", {}).get("result", [])
                    if len(result) == 1 and float(result[0]["value"][1]) == expected:
                        return
                await asyncio.sleep(0.2)  # poll interval, not a wait for state
    except TimeoutError:
        raise AssertionError(f"{promql} != {expected} within {DEADLINE}s; last: {last}") from None


async def test_real_prometheus_scrapes_the_side_port(observe: Observe, tmp_path: Path) -> None:
    observed = await observe(settings_with(metrics={"bearer_token_env": "METRICS_TOKEN"}))
    for _ in range(5):
        await observed.stub.Complete(pb.CompleteRequest(prompt="one two"))
    async for _ in observed.stub.StreamComplete(pb.StreamCompleteRequest(prompt="hi")):
        pass
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await observed.stub.Complete(pb.CompleteRequest())

    async with (
        prometheus(tmp_path, observed.obs.metrics_port, METRICS_TOKEN) as url,
        aiohttp.ClientSession() as session,
    ):
        await poll_value(session, url, 'up{job="hapax"}', 1)
        await poll_value(session, url, 'hapax_grpc_requests_total{method="Complete",code="OK"}', 5)
        await poll_value(session, url, 'sum(hapax_grpc_requests_total{code!="OK"})', 2)
        await poll_value(session, url, 'hapax_errors_total{type="INVALID_REQUEST"}', 2)
        await poll_value(
            session, url, 'sum by (provider) (hapax_provider_requests_total{outcome="success"})', 6
        )
        await poll_value(session, url, 'hapax_tokens_total{kind="prompt"}', 5 * 2 + 1)
        await poll_value(session, url, 'hapax_circuit_breaker_state{provider="local"}', 0)
        await poll_value(
            session, url, 'hapax_time_to_first_token_seconds_count{provider="local"}', 1
        )
        # Every alert and dashboard query is valid PromQL to this Prometheus.
        substitutions = {"$__rate_interval": "1m", "$method": ".*", "$provider": ".*"}
        for name, expr in {**alert_exprs(), **dashboard_exprs()}.items():
            for placeholder, value in substitutions.items():
                expr = expr.replace(placeholder, value)
            answer = await query(session, url, expr)
            assert answer["status"] == "success", (name, expr, answer)
