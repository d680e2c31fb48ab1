"""Every answered call says what it cost and the energy it took, through both doors: in `Usage`
(gRPC), in the HTTP door's answer headers, in the metrics, and in its usage-ledger row. A real
gateway and the fake OpenAI upstream; prices from the config."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import embedding_service_pb2 as embed_pb
from hapax.v1 import embedding_service_pb2_grpc as embed_grpc
from tests.conftest import Gateway, StartGateway, make_settings
from tests.fakes.upstream import FakeUpstream, Reply
from tests.observability.conftest import openai_provider

DOOR = {"enabled": True, "address": "127.0.0.1:0"}
# USD per 1M tokens for the upstream model "default" of the provider "fake"
PRICE = {"prompt": "2.5", "completion": "10", "cached_prompt": "1.25", "embedding": "0.02"}
ENERGY = {"joules_per_prompt_token": 0.5, "joules_per_completion_token": 2.0}


def nanos(prompt: int, completion: int, cached: int = 0) -> int:
    """The cost in nano-dollars: tokens x USD per 1M tokens x 1e9 / 1e6."""
    amount = (
        (prompt - cached) * Decimal(PRICE["prompt"])
        + cached * Decimal(PRICE["cached_prompt"])
        + completion * Decimal(PRICE["completion"])
    ) * 1000
    return int(amount.to_integral_value())


def settings(fake: FakeUpstream, tmp_path: Path, *, priced: bool = True, **more: Any) -> Any:
    more.setdefault("prices", {"models": {"fake/default": PRICE} if priced else {}})
    return make_settings(
        providers=[openai_provider(fake, "fake")],
        energy={"models": {"fake/default": ENERGY}},
        ledger={"path": str(tmp_path / "usage.db"), "flush_interval": "50ms"},
        openai_http=DOOR,
        **more,
    )


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY started_at")]


async def test_complete_says_what_it_cost(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=1000, completion_tokens=200, cached_tokens=400))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    usage = (await gateway.stub.Complete(pb.CompleteRequest(prompt="hello"))).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (1000, 200)
    assert usage.cost.currency == "USD"
    assert usage.cost.nanos == nanos(1000, 200, cached=400) == 4_000_000  # USD 0.004
    assert usage.energy_joules == pytest.approx(1000 * 0.5 + 200 * 2.0)


async def test_a_stream_says_what_it_cost_in_its_last_message(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(chunks=4, prompt_tokens=30, completion_tokens=4))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    messages = [m async for m in gateway.stub.StreamComplete(pb.StreamCompleteRequest(prompt="x"))]
    assert not any(m.usage.HasField("cost") for m in messages[:-1])
    assert messages[-1].usage.cost.nanos == nanos(30, 4) > 0


async def test_an_unpriced_model_has_no_cost_not_a_cost_of_zero(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path, priced=False))
    usage = (await gateway.stub.Complete(pb.CompleteRequest(prompt="hello"))).usage
    assert usage.prompt_tokens > 0 and not usage.HasField("cost")
    assert usage.HasField("energy_joules")  # the energy figure is configured apart
    metrics = await scrape(gateway)
    assert 'hapax_unpriced_calls_total{model="default",provider="fake"} 1.0' in metrics


async def test_embed_is_priced_at_the_embedding_price(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    stub = embed_grpc.EmbeddingServiceStub(gateway.channel)
    usage = (await stub.Embed(embed_pb.EmbedRequest(inputs=["a", "b"]))).usage
    assert usage.prompt_tokens > 0
    assert usage.cost.nanos == int(
        (usage.prompt_tokens * Decimal(PRICE["embedding"]) * 1000).to_integral_value()
    )


async def test_the_http_door_says_the_cost_in_its_headers_and_the_metrics_count_it(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_default(Reply(prompt_tokens=1000, completion_tokens=200))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as answer:
        assert answer.status == 200
        assert answer.headers["x-hapax-cost"] == "0.004500000 USD"  # 1000 x 2.5 + 200 x 10
        assert float(answer.headers["x-hapax-energy-joules"]) == pytest.approx(900)
    await gateway.stub.Complete(pb.CompleteRequest(prompt="hello"))
    metrics = await scrape(gateway)
    assert 'hapax_cost_total{currency="USD",model="default",provider="fake"} 0.009' in metrics
    assert 'hapax_energy_joules_total{model="default",provider="fake"} 1800.0' in metrics


async def test_one_ledger_row_per_call_that_reached_a_provider(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Both doors, unary and streamed; a call refused before any provider (an empty request)
    has no row; a graceful stop writes every row at once."""
    fake_upstream.set_default(Reply(prompt_tokens=100, completion_tokens=3, chunks=3))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    await gateway.stub.Complete(
        pb.CompleteRequest(prompt="a", metadata={"team": "search"}),
        metadata=(("x-request-id", "row-grpc-unary"),),
    )
    async for _ in gateway.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="b"), metadata=(("x-request-id", "row-grpc-stream"),)
    ):
        pass
    assert gateway.app.openai_http is not None
    url = f"http://127.0.0.1:{gateway.app.openai_http.port}/v1/chat/completions"
    body = {"model": "default", "messages": [{"role": "user", "content": "c"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"x-request-id": "row-http"}) as answer:
            assert answer.status == 200
        async with http.post(url, json={"model": "default"}) as refused:
            assert refused.status == 400
    await gateway.app.stop(grace=1)  # flushes: no waiting for the batch interval

    rows = {row["request_id"]: row for row in ledger_rows(tmp_path / "usage.db")}
    assert set(rows) == {"row-grpc-unary", "row-grpc-stream", "row-http"}
    unary, stream, http_row = rows["row-grpc-unary"], rows["row-grpc-stream"], rows["row-http"]
    assert (unary["door"], unary["method"], stream["method"]) == (
        "grpc",
        "Complete",
        "StreamComplete",
    )
    assert (http_row["door"], http_row["method"]) == ("http", "Complete")
    for row in rows.values():
        assert row["code"] == "OK" and row["reason"] == ""
        assert (row["model"], row["provider"], row["upstream_model"]) == (
            "default",
            "fake",
            "default",
        )
        assert (row["prompt_tokens"], row["completion_tokens"]) == (100, 3)
        assert row["cost_nanos"] == nanos(100, 3) and row["currency"] == "USD"
        assert row["attempts"] == 1 and not row["shared"]
        assert row["duration_ms"] > 0
    assert '"team": "search"' in unary["tags"]
    assert stream["ttft_ms"] is not None and 0 < stream["ttft_ms"] <= stream["duration_ms"]
    assert unary["ttft_ms"] is None


async def test_a_call_that_failed_at_its_provider_has_a_row_with_its_outcome(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    from tests.fakes.upstream import Fail

    fake_upstream.set_default(Fail(400, message="bad request upstream"))
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.stub.Complete(
            pb.CompleteRequest(prompt="a"), metadata=(("x-request-id", "row-failed"),)
        )
    await gateway.app.stop(grace=1)
    [row] = ledger_rows(tmp_path / "usage.db")
    assert row["request_id"] == "row-failed" and row["code"] == "INVALID_ARGUMENT"
    assert row["reason"] and row["attempts"] == 1 and row["provider"] == "fake"
    assert row["cost_nanos"] == 0 and row["prompt_tokens"] == 0  # no answer: nothing to pay


async def scrape(gateway: Gateway) -> str:
    port = gateway.app.observability.metrics_port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
            return await answer.text()


async def test_a_ledger_keeps_one_currency(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Its sums would mix currencies otherwise: a gateway pricing in another currency may not
    open it, and a reload may not change the currency under it."""
    from hapaxd import config
    from hapaxd.app import App

    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    euros = settings(
        fake_upstream,
        tmp_path,
        priced=False,
        prices={"currency": "EUR", "defaults": False, "models": {"fake/default": PRICE}},
    )
    assert not await gateway.app.reload_from(lambda: euros, "test")
    assert gateway.app.settings.prices.currency == "USD"
    await gateway.app.stop(grace=0)
    with pytest.raises(config.ConfigError, match="keeps costs in USD, not EUR"):
        App(euros, address="127.0.0.1:0")


def test_a_ledger_path_that_cannot_be_written_stops_the_gateway_with_its_reason(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Not a silent gateway without a ledger: the operator sees why at start (a read-only
    filesystem, a home directory that does not exist), and chooses a path or turns it off."""
    from hapaxd import config
    from hapaxd.app import App
    from hapaxd.ledger.paths import ledger_path

    (tmp_path / "a-file").write_text("")
    blocked = settings(fake_upstream, tmp_path).model_copy(
        update={"ledger": config.LedgerSettings(path=str(tmp_path / "a-file" / "usage.db"))}
    )
    with pytest.raises(config.ConfigError, match=r"^ledger\.path: "):
        App(blocked, address="127.0.0.1:0")
    environ = {"HAPAX_STATE_DIR": "/var/lib/hapax", "HOME": "/nonexistent"}
    assert ledger_path("", environ) == Path("/var/lib/hapax/usage.db")
    assert ledger_path("", {"XDG_STATE_HOME": "/x"}) == Path("/x/hapax/usage.db")
    assert ledger_path("~/u.db", {}) == Path.home() / "u.db"


async def test_a_reload_writes_the_ledger_rows_of_the_calls_before_it(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    from hapaxd import config

    ledger = config.LedgerSettings(path=str(tmp_path / "usage.db"), flush_interval=600)
    slow = settings(fake_upstream, tmp_path).model_copy(update={"ledger": ledger})
    gateway = await start_gateway(slow)
    await gateway.stub.Complete(
        pb.CompleteRequest(prompt="a"), metadata=(("x-request-id", "before-reload"),)
    )
    assert ledger_rows(tmp_path / "usage.db") == []  # the batch interval is ten minutes
    assert await gateway.app.reload_from(lambda: slow, "test")
    assert [r["request_id"] for r in ledger_rows(tmp_path / "usage.db")] == ["before-reload"]


async def test_an_embed_call_has_its_ledger_row(
    start_gateway: StartGateway, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gateway = await start_gateway(settings(fake_upstream, tmp_path))
    stub = embed_grpc.EmbeddingServiceStub(gateway.channel)
    usage = (
        await stub.Embed(
            embed_pb.EmbedRequest(inputs=["a", "b"]), metadata=(("x-request-id", "row-embed"),)
        )
    ).usage
    await gateway.app.stop(grace=1)
    [row] = ledger_rows(tmp_path / "usage.db")
    assert (row["request_id"], row["method"], row["door"]) == ("row-embed", "Embed", "grpc")
    assert row["prompt_tokens"] == usage.prompt_tokens and row["cost_nanos"] == usage.cost.nanos
