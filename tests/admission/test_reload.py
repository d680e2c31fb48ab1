"""Reload without a restart: a new config swapped in under steady unary and streaming load with
no failed call (a key added, one revoked, a provider added), breaker state and health of
unchanged providers kept, an invalid file refused with the old settings kept, and the triggers a
running `hapaxd serve` answers: SIGHUP and a change of its config file (rename-on-save too)."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
from typing import Any

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd import config
from hapaxd.core.breaker import State
from tests.admission.conftest import NARROW_KEY, OPS_KEY, SEARCH_KEY, bearer, keys
from tests.admission.test_auth import list_services, refused
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.processes import gateway_process

CHAT = "openai.chat"


def two_providers(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [openai_provider(fake, "a"), openai_provider(fake, "b")],
        "provider_preference": ["a", "b"],
        "circuit_breaker": {"failure_threshold": 1, "timeout": "1m"},
        "router": {"retry": {"max_attempts": 1}},
        "auth": {"keys": keys()},
        **extra,
    }


async def test_a_reload_keeps_unchanged_providers_with_their_breaker_and_health(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    observed = await observe(settings_with(**two_providers(fake_upstream)))
    app = observed.app
    a, b = app.upstreams
    fake_upstream.script(CHAT, Fail(500))  # a fails once: its breaker opens; b answers
    reply = await observed.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.route.provider == "b" and a.breaker.state is State.OPEN
    b.healthy = False  # as if its probes had failed

    changed = two_providers(fake_upstream)
    changed["providers"] = [
        openai_provider(fake_upstream, "a"),
        openai_provider(fake_upstream, "b", timeouts={"total": "5m"}),  # changed: rebuilt
        openai_provider(fake_upstream, "c"),  # added
    ]
    changed["provider_preference"] = ["c", "a", "b"]
    assert await app.reload(settings_with(**changed)) == []
    kept, rebuilt, added = app.upstreams
    assert kept is a and kept.breaker.state is State.OPEN, "breaker state kept"
    assert rebuilt is not b and rebuilt.healthy, "a changed provider starts afresh"
    assert added.name == "c"
    reply = await observed.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.route.provider == "c"
    samples = await observed.samples()
    assert samples.value("hapax_provider_healthy", provider="c") == 1, "new series at start"
    requests = {"provider": "c", "model": "default", "outcome": "success"}
    assert samples.value("hapax_provider_requests_total", **requests) == 1


async def test_retry_and_breaker_settings_apply_from_the_reload_on(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    observed = await observe(settings_with(**two_providers(fake_upstream)))
    app, stub = observed.app, observed.stub
    patient = two_providers(fake_upstream)
    patient["router"] = {"retry": {"max_attempts": 3, "initial_backoff": "1ms"}}
    patient["circuit_breaker"] = {"failure_threshold": 5, "timeout": "1m"}
    await app.reload(settings_with(**patient))
    fake_upstream.script(CHAT, Fail(503), Fail(503))  # a fails twice, then answers
    reply = await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    assert (reply.route.provider, reply.route.attempts) == ("a", 3), "3 attempts, on a"
    assert app.upstreams[0].breaker.state is State.CLOSED, "5 failures open it now, not 1"


async def test_calls_in_flight_finish_on_the_generation_they_began_on(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    observed = await observe(settings_with(**two_providers(fake_upstream)))
    app = observed.app
    old = app.generations.current
    fake_upstream.set_default(Reply(text="one two three", chunks=3, pause_after=1))
    stream = observed.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="long"), metadata=bearer(SEARCH_KEY)
    )
    assert (await stream.read()).delta
    removed = two_providers(fake_upstream)
    removed["providers"] = [openai_provider(fake_upstream, "b")]  # a, serving the stream, goes
    removed["provider_preference"] = ["b"]
    await app.reload(settings_with(**removed))
    assert old.retired and old.calls == 1, "the stream still runs on the old generation"
    fake_upstream.set_default(Reply(text="fine"))
    fake_upstream.release()
    rest = []
    while (message := await stream.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert rest[-1].route.provider == "a" and rest[-1].finish_reason == pb.FINISH_REASON_STOP
    assert old.calls == 0 and old.on_idle is None, "the old generation closed its leftovers"
    reply = await observed.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY)
    )
    assert reply.route.provider == "b"


async def test_a_reload_under_steady_load_fails_no_call_and_revokes_at_once(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    start = two_providers(fake_upstream)
    start["providers"] = [openai_provider(fake_upstream, "a")]
    start["provider_preference"] = ["a"]
    start["auth"] = {"keys": keys()[:2]}  # search (the steady load) and ops (to be revoked)
    observed = await observe(settings_with(**start))
    app, stub = observed.app, observed.stub
    fake_upstream.set_default(Reply(text="a b c d", chunks=4, chunk_delay=0.02))
    failures: list[str] = []
    providers: list[str] = []
    stop = asyncio.Event()

    async def unary() -> None:
        while not stop.is_set():
            try:
                reply = await stub.Complete(
                    pb.CompleteRequest(prompt="steady"), metadata=bearer(SEARCH_KEY), timeout=10
                )
                providers.append(reply.route.provider)
            except grpc.aio.AioRpcError as error:
                failures.append(f"unary {error.code().name}: {error.details()}")

    async def streaming() -> None:
        while not stop.is_set():
            try:
                messages = [
                    m
                    async for m in stub.StreamComplete(
                        pb.StreamCompleteRequest(prompt="steady"),
                        metadata=bearer(SEARCH_KEY),
                        timeout=10,
                    )
                ]
                last = messages[-1]
                assert last.finish_reason == pb.FINISH_REASON_STOP
                providers.append(last.route.provider)
            except grpc.aio.AioRpcError as error:
                failures.append(f"stream {error.code().name}: {error.details()}")

    workers = [asyncio.ensure_future(unary()) for _ in range(4)]
    workers += [asyncio.ensure_future(streaming()) for _ in range(3)]
    await asyncio.sleep(0.5)
    assert (await stub.Complete(pb.CompleteRequest(prompt="x"), metadata=bearer(OPS_KEY))).text
    before = len(providers)

    new = two_providers(fake_upstream)
    new["providers"] = [
        openai_provider(fake_upstream, "a"),
        openai_provider(fake_upstream, "added"),
    ]
    new["provider_preference"] = ["added", "a"]
    new["auth"] = {"keys": [keys()[0], keys()[2]]}  # narrow added, ops revoked
    await app.reload(settings_with(**new))
    error = await refused(stub.Complete(pb.CompleteRequest(prompt="x"), metadata=bearer(OPS_KEY)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, "revoked from the reload on"
    reply = await stub.Complete(
        pb.CompleteRequest(model="chat-1", prompt="x"), metadata=bearer(NARROW_KEY)
    )
    assert reply.route.provider == "added"
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)

    assert failures == []
    assert before > 20 and set(providers[:before]) == {"a"}
    assert "added" in providers[before:], "calls after the reload reach the added provider"
    assert len(providers) - before > 20


async def test_access_and_auth_itself_change_with_a_reload(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    observed = await observe(settings_with(**two_providers(fake_upstream)))
    app, gateway = observed.app, observed.gateway
    assert "hapax.v1.CompletionService" in await list_services(gateway)  # open by default
    closed = two_providers(fake_upstream)
    closed["auth"] = {"keys": keys(), "reflection": "any_key"}
    await app.reload(settings_with(**closed))
    assert (await refused(list_services(gateway))).code() is grpc.StatusCode.UNAUTHENTICATED
    assert await list_services(gateway, bearer(SEARCH_KEY))
    off = two_providers(fake_upstream)
    off["auth"] = {"enabled": False}
    await app.reload(settings_with(**off))
    assert (await observed.stub.Complete(pb.CompleteRequest(prompt="anyone"))).text
    assert await list_services(gateway)


async def test_an_invalid_new_config_is_refused_and_the_old_one_stays(
    observe: Observe, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hapaxd")
    observed = await observe(settings_with(**two_providers(fake_upstream)))
    app = observed.app
    running = app.settings

    def bad() -> config.Settings:
        data = two_providers(fake_upstream)
        data["providers"][1]["base_url"] = "nope"
        data["router"] = {"retry": {"max_attempts": 99}}
        return config.parse(data, {})

    assert await app.reload_from(bad, "test") is False
    assert app.settings is running
    lines = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
    assert len(lines) == 1
    assert "providers[1].base_url: not a URL" in lines[0]
    assert "router.retry.max_attempts: Input should be less than or equal to 10" in lines[0]
    assert (
        await observed.stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=bearer(SEARCH_KEY))
    ).text
    assert await app.reload_from(lambda: settings_with(**two_providers(fake_upstream)), "test")
    samples = await observed.samples()
    assert samples.value("hapax_config_reloads_total", outcome="failure") == 1
    assert samples.value("hapax_config_reloads_total", outcome="success") == 1


def process_config(keys_yaml: str, watch: bool = True) -> str:
    return f"""\
server: {{address: "{{address}}", grace_period: 1s}}
metrics: {{enabled: false}}
logging: {{level: info, format: text}}
providers:
  - {{name: local, type: local, models: {{"*": local}}}}
default_model: default
health_check: {{enabled: false}}
reload: {{watch: {str(watch).lower()}, watch_interval: 100ms}}
auth:
  keys:
{keys_yaml}"""


def key_line(key_id: str, key: str) -> str:
    return f"    - {{id: {key_id}, sha256: {config.digest(key)}}}\n"


async def served(address: str, key: str) -> str:
    """The status code name of a Complete with `key`."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await pb_grpc.CompletionServiceStub(channel).Complete(
                pb.CompleteRequest(prompt="hi"), metadata=bearer(key), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return "OK"


async def eventually(address: str, key: str, code: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while await served(address, key) != code:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_running_gateway_reloads_when_its_file_is_replaced_or_on_sighup(
    tmp_path: pathlib.Path,
) -> None:
    text = process_config(key_line("search", SEARCH_KEY))
    async with gateway_process(text, tmp_path) as gateway:
        path = tmp_path / "gateway.yaml"
        address = gateway.address
        assert await served(address, SEARCH_KEY) == "OK"
        assert await served(address, OPS_KEY) == "UNAUTHENTICATED"

        # An editor's rename-on-save: a new file over the old one.
        body = path.read_text().replace(key_line("search", SEARCH_KEY), key_line("ops", OPS_KEY))
        (tmp_path / "gateway.yaml.swp").write_text(body)
        os.replace(tmp_path / "gateway.yaml.swp", path)
        await eventually(address, OPS_KEY, "OK")
        assert await served(address, SEARCH_KEY) == "UNAUTHENTICATED"

        # An invalid file: refused, logged by key, the running settings stay.
        path.write_text(body.replace("default_model: default", "default_model: 7\nbogus: 1"))
        await asyncio.sleep(0.5)
        assert await served(address, OPS_KEY) == "OK"
        assert "config reload" in gateway.output() and "bogus: unknown key" in gateway.output()

        # Watching off: only SIGHUP reloads.
        def write(*lines: str) -> None:
            body = process_config("".join(lines), watch=False)
            path.write_text(body.replace("{address}", address))

        write(key_line("ops", OPS_KEY), key_line("narrow", NARROW_KEY))
        await eventually(address, NARROW_KEY, "OK")  # the last change the watch saw
        write(key_line("search", SEARCH_KEY))
        await asyncio.sleep(0.5)
        assert await served(address, OPS_KEY) == "OK", "not watching: the change waits"
        gateway.proc.send_signal(signal.SIGHUP)
        await eventually(address, SEARCH_KEY, "OK")
        assert await served(address, OPS_KEY) == "UNAUTHENTICATED"
        assert gateway.alive
