"""Fixtures for observability tests: a gateway with Observability attached, scraping helpers, and a
session-wide capture of every log record that fails the run if a known secret was ever logged."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hapaxd import config
from hapaxd.app import App
from hapaxd.observability import Observability
from hapaxd.observability.tracing import Tracing
from tests.conftest import LOCAL, Gateway, StartGateway
from tests.fakes.fixtures import fake_upstream  # noqa: F401  (a fixture, used by name)
from tests.fakes.upstream import FakeUpstream
from tests.support.logcapture import SECRETS


def settings_with(environ: Mapping[str, str] | None = None, **data: Any) -> config.Settings:
    """Like tests.conftest.make_settings, with environment variables for secrets and the metrics
    side port on a free loopback port."""
    data.setdefault("providers", [LOCAL])
    data.setdefault("default_model", "default")
    data.setdefault("health_check", {"enabled": False})
    data.setdefault("auth", {"enabled": False})  # tests/admission/ turn it on
    metrics = dict(data.get("metrics") or {})
    metrics.setdefault("address", "127.0.0.1:0")
    data["metrics"] = metrics
    return config.parse(data, {**SECRETS, **(environ or {})})


def openai_provider(fake: FakeUpstream, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": fake.base_url("openai"),
        "models": {"*": "*"},
        **extra,
    }


@dataclasses.dataclass
class Observed:
    """A started gateway with its Observability."""

    gateway: Gateway
    obs: Observability

    @property
    def stub(self) -> Any:
        return self.gateway.stub

    @property
    def app(self) -> App:
        return self.gateway.app

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.obs.metrics_port}{path}"

    async def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str, Mapping[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url(path), headers=headers or {}) as response,
        ):
            return response.status, await response.text(), response.headers

    async def samples(self, headers: Mapping[str, str] | None = None) -> Samples:
        status, text, _ = await self.get("/metrics", headers)
        assert status == 200, text
        return Samples(text)


class Samples:
    """Parsed /metrics: value(name, **labels) and the label sets of a sample name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.rows: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        for sample, got, value in self.rows:
            if sample == name and got == labels:
                return value
        return None

    def labels(self, name: str) -> list[dict[str, str]]:
        return [got for sample, got, _ in self.rows if sample == name]


Observe = Callable[..., Awaitable[Observed]]


@pytest.fixture
async def observe(start_gateway: StartGateway) -> AsyncIterator[Observe]:
    """observe(settings, tracing=None, **App kwargs) -> Observed, stopped with its gateway."""

    async def start(
        settings: config.Settings, *, tracing: Tracing | None = None, **kwargs: Any
    ) -> Observed:
        obs = Observability(settings, tracing=tracing, environ={})
        gateway = await start_gateway(settings, observability=obs, **kwargs)
        return Observed(gateway, obs)

    yield start
