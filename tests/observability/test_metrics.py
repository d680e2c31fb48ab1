"""Metric values after real traffic, bounded label values, and the events the router reports."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from prometheus_client import CollectorRegistry

from hapax.v1 import admin_service_pb2
from hapax.v1 import completion_service_pb2 as pb
from hapaxd.api.observing import ObservingInterceptor
from hapaxd.config import default_settings
from hapaxd.core.events import (
    AttemptFinished,
    BreakerChanged,
    Deduplicated,
    FailedOver,
    HealthChanged,
    HealthChecked,
    Retried,
)
from hapaxd.core.routes import RouteTable
from hapaxd.observability.call_observer import CallObserver
from hapaxd.observability.listeners import PrometheusListener
from hapaxd.observability.metrics import (
    BREAKER_STATES,
    DEDUPLICATED_METHODS,
    REASONS,
    TOKEN_KINDS,
    Metrics,
)
from tests.conftest import AccessLog
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.recorder import Recorder


async def test_counters_after_ok_and_failed_calls(observe: Observe) -> None:
    observed = await observe(settings_with())
    stub = observed.stub
    for _ in range(3):
        await stub.Complete(pb.CompleteRequest(prompt="one two three"))
    replies = [m async for m in stub.StreamComplete(pb.StreamCompleteRequest(prompt="hi"))]
    for bad in (pb.CompleteRequest(), pb.CompleteRequest(prompt="x", temperature=-1)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(bad)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())

    s = await observed.samples()
    assert s.value("hapax_grpc_requests_total", method="Complete", code="OK") == 3
    assert s.value("hapax_grpc_requests_total", method="Complete", code="INVALID_ARGUMENT") == 2
    assert s.value("hapax_grpc_requests_total", method="StreamComplete", code="OK") == 1
    assert s.value("hapax_grpc_requests_total", method="ListProviders", code="OK") == 1
    assert s.value("hapax_grpc_request_duration_seconds_count", method="Complete") == 5
    assert s.value("hapax_gateway_overhead_seconds_count", method="Complete") == 5
    assert s.value("hapax_grpc_active_requests", method="Complete") == 0
    assert s.value("hapax_errors_total", type="INVALID_REQUEST") == 2
    assert (
        s.value(
            "hapax_provider_requests_total", provider="local", model="default", outcome="success"
        )
        == 4
    )
    assert s.value("hapax_request_latency_seconds_count", provider="local") == 4
    assert (
        s.value("hapax_time_to_first_token_seconds_count", provider="local", model="default") == 1
    )
    final = replies[-1].usage
    assert s.value("hapax_tokens_total", provider="local", model="default", kind="prompt") == (
        3 * 3 + final.prompt_tokens
    )
    assert (
        s.value("hapax_tokens_total", provider="local", model="default", kind="completion")
        > final.completion_tokens
    )
    # series that exist before anything happened
    assert s.value("hapax_circuit_breaker_state", provider="local") == 0
    assert s.value("hapax_provider_healthy", provider="local") == 1
    assert s.value("hapax_healthy_providers") == 1
    assert s.value("hapax_retries_total", provider="local") == 0
    assert s.value("hapax_health_check_errors_total", provider="local") == 0


async def test_overhead_excludes_upstream_time(observe: Observe) -> None:
    slow = {
        "name": "slow",
        "type": "local",
        "models": {"*": "local"},
        "options": {"chunk_delay": "0.02"},
    }
    observed = await observe(settings_with(providers=[slow]))
    async for _ in observed.stub.StreamComplete(pb.StreamCompleteRequest(prompt="a b c d e")):
        pass
    s = await observed.samples()
    total = s.value("hapax_grpc_request_duration_seconds_sum", method="StreamComplete")
    overhead = s.value("hapax_gateway_overhead_seconds_sum", method="StreamComplete")
    assert total is not None and overhead is not None
    assert total > 0.2  # 10+ words, 20 ms apart
    assert overhead < total / 2


async def test_unknown_models_share_one_other_series(observe: Observe) -> None:
    settings = settings_with(
        providers=[{"name": "local", "type": "local", "models": {"*": "local", "known": "local"}}]
    )
    observed = await observe(settings)
    for i in range(50):
        await observed.stub.Complete(pb.CompleteRequest(prompt="hi", model=f"made-up-{i}"))
    await observed.stub.Complete(pb.CompleteRequest(prompt="hi", model="known"))
    s = await observed.samples()
    models = {labels["model"] for labels in s.labels("hapax_provider_requests_total")}
    assert models == {"other", "known", "default"}  # the logical models start at zero
    assert (
        s.value("hapax_provider_requests_total", provider="local", model="other", outcome="success")
        == 50
    )
    assert {labels["model"] for labels in s.labels("hapax_tokens_total")} == {
        "other",
        "known",
        "default",
    }
    assert "made-up" not in s.text


async def test_failover_retry_and_breaker_counters(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    settings = settings_with(
        providers=[
            openai_provider(fake_upstream, "primary", api_key_env="OPENAI_TEST_KEY"),
            openai_provider(fake_upstream, "backup", api_key_env="BACKUP_TEST_KEY"),
        ],
        provider_preference=["primary", "backup"],
        circuit_breaker={"failure_threshold": 2, "timeout": "1h"},
        router={"retry": {"max_attempts": 2, "initial_backoff": "1ms", "max_backoff": "2ms"}},
    )
    observed = await observe(settings)
    fake_upstream.script("openai.chat", Fail(500), Fail(500), Reply(prompt_tokens=7, chunks=2))
    reply = await observed.stub.Complete(pb.CompleteRequest(prompt="hi"))
    assert reply.route.provider == "backup" and reply.route.attempts == 3
    s = await observed.samples()
    assert s.value("hapax_retries_total", provider="primary") == 1
    assert s.value("hapax_failovers_total", **{"from": "primary", "to": "backup"}) == 1
    assert (
        s.value(
            "hapax_provider_requests_total",
            provider="primary",
            model="default",
            outcome="transient",
        )
        == 2
    )
    assert (
        s.value(
            "hapax_provider_requests_total", provider="backup", model="default", outcome="success"
        )
        == 1
    )
    assert s.value("hapax_circuit_breaker_state", provider="primary") == 2
    assert s.value("hapax_circuit_breaker_state", provider="backup") == 0
    assert s.value("hapax_tokens_total", provider="backup", model="default", kind="prompt") == 7
    assert s.value("hapax_grpc_requests_total", method="Complete", code="OK") == 1


async def test_series_known_at_start_are_exported_at_zero_after_one_call(
    observe: Observe,
) -> None:
    spare = {"name": "spare", "type": "local", "models": {"default": "local", "extra": "local"}}
    settings = settings_with(
        providers=[{"name": "local", "type": "local", "models": {"*": "local"}}, spare],
        models={"extra": {"provider_preference": ["spare"]}},  # local, a "*", is not asked
    )
    observed = await observe(settings)
    await observed.stub.Complete(pb.CompleteRequest(prompt="one two"))
    s = await observed.samples()

    assert 'hapax_deduplicated_requests_total{method="Complete"} 0.0' in s.text
    assert 'hapax_time_to_first_token_seconds_count{model="default",provider="local"} 0.0' in s.text
    pairs = [("local", "default"), ("spare", "default"), ("spare", "extra")]
    assert (
        s.value("hapax_time_to_first_token_seconds_count", provider="local", model="extra") is None
    )
    for provider, model in pairs:
        used = (provider, model) == ("local", "default")
        assert (
            s.value("hapax_time_to_first_token_seconds_count", provider=provider, model=model) == 0
        )
        assert s.value(
            "hapax_provider_requests_total", provider=provider, model=model, outcome="success"
        ) == (1 if used else 0)
        for kind in TOKEN_KINDS:
            tokens = s.value("hapax_tokens_total", provider=provider, model=model, kind=kind)
            assert tokens is not None and (tokens > 0) is used
    for provider in ("local", "spare"):
        assert s.value("hapax_retries_total", provider=provider) == 0
        assert s.value("hapax_health_check_errors_total", provider=provider) == 0
        assert s.value("hapax_health_check_duration_seconds_count", provider=provider) == 0
        assert s.value("hapax_circuit_breaker_state", provider=provider) == 0
        for state in BREAKER_STATES:
            assert (
                s.value("hapax_circuit_breaker_transitions_total", provider=provider, to=state) == 0
            )
    assert s.value("hapax_request_latency_seconds_count", provider="spare") == 0
    for method in DEDUPLICATED_METHODS:
        assert s.value("hapax_deduplicated_requests_total", method=method) == 0
    for method in ("StreamComplete", "ListProviders"):
        assert s.value("hapax_grpc_requests_total", method=method, code="OK") == 0
        assert s.value("hapax_gateway_overhead_seconds_count", method=method) == 0
    for reason in REASONS:
        assert s.value("hapax_errors_total", type=reason) == 0
    overflow = [
        (name, labels)
        for name, labels, _ in s.rows
        if "other" in (labels.get("provider"), labels.get("model"), labels.get("type"))
    ]
    assert overflow == [], "the overflow value is not started"


def test_wildcard_providers_start_series_for_every_logical_model() -> None:
    settings = settings_with(
        providers=[
            {"name": "any", "type": "local", "models": {"*": "local"}},
            {"name": "one", "type": "local", "models": {"named": "local"}},
        ],
        models={"configured": {}},
    )
    assert RouteTable(settings).served() == [
        ("any", "configured"),
        ("any", "default"),
        ("any", "named"),
        ("one", "named"),
    ]


def test_the_built_in_default_starts_a_bounded_set_of_series() -> None:
    metrics = Metrics(default_settings({}), CollectorRegistry())
    assert RouteTable(default_settings({})).served() == [("local", "default")]
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    assert {s.labels.get("provider") for s in samples} <= {None, "local"}
    assert {s.labels.get("model") for s in samples} <= {None, "default"}
    assert len(samples) < 350  # about 2 per error reason and code, and the per-method series


def _metrics(*providers: str) -> tuple[Metrics, PrometheusListener]:
    settings = settings_with(
        providers=[{"name": p, "type": "local", "models": {"*": "local"}} for p in providers]
    )
    metrics = Metrics(settings, CollectorRegistry())
    return metrics, PrometheusListener(metrics)


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_health_events_drive_the_health_gauges() -> None:
    metrics, events = _metrics("a", "b")
    assert _value(metrics, "hapax_healthy_providers") == 2
    events(HealthChecked("a", False, 0.5))
    events(HealthChecked("a", True, 0.1))
    events(HealthChanged("a", False))
    assert _value(metrics, "hapax_health_check_errors_total", provider="a") == 1
    assert _value(metrics, "hapax_health_check_duration_seconds_count", provider="a") == 2
    assert _value(metrics, "hapax_provider_healthy", provider="a") == 0
    assert _value(metrics, "hapax_healthy_providers") == 1
    events(HealthChanged("b", False))
    assert _value(metrics, "hapax_healthy_providers") == 0
    events(HealthChanged("a", True))
    assert _value(metrics, "hapax_healthy_providers") == 1


def test_breaker_states_map_to_numbers() -> None:
    metrics, events = _metrics("a")
    for state, number in (("open", 2), ("half_open", 1), ("closed", 0)):
        events(BreakerChanged("a", state))
        assert _value(metrics, "hapax_circuit_breaker_state", provider="a") == number
        assert (
            _value(metrics, "hapax_circuit_breaker_transitions_total", provider="a", to=state) == 1
        )


def test_unknown_label_values_are_bounded() -> None:
    metrics, events = _metrics("a")
    for i in range(20):
        events(AttemptFinished(f"ghost-{i}", f"model-{i}", f"weird-{i}", 0.1))
        events(Deduplicated(f"Method{i}"))
        events(FailedOver(f"x{i}", "a"))
    assert (
        _value(
            metrics,
            "hapax_provider_requests_total",
            provider="other",
            model="other",
            outcome="other",
        )
        == 20
    )
    assert _value(metrics, "hapax_deduplicated_requests_total", method="other") == 20
    assert _value(metrics, "hapax_failovers_total", **{"from": "other", "to": "a"}) == 20


def test_each_app_has_its_own_registry() -> None:
    first, events = _metrics("a")
    second, _ = _metrics("a")
    events(Retried("a"))
    assert _value(first, "hapax_retries_total", provider="a") == 1
    assert _value(second, "hapax_retries_total", provider="a") == 0
    assert first.registry is not second.registry


async def test_deduplicated_calls_are_counted_and_logged(
    observe: Observe, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    events = Recorder()
    observed = await observe(
        settings_with(providers=[openai_provider(fake_upstream, "up")]), listeners=[events]
    )
    caplog.set_level(logging.INFO, logger="hapaxd.access")
    fake_upstream.hold()
    calls = [
        asyncio.ensure_future(
            observed.stub.Complete(
                pb.CompleteRequest(prompt="same", temperature=0.0),
                metadata=(("authorization", "Bearer tenant"),),
            )
        )
        for _ in range(3)
    ]
    await events.wait_until(lambda: events.count(Deduplicated) == 2)
    fake_upstream.release()
    await asyncio.gather(*calls)
    s = await observed.samples()
    assert s.value("hapax_deduplicated_requests_total", method="Complete") == 2
    assert (
        s.value("hapax_provider_requests_total", provider="up", model="default", outcome="success")
        == 1
    )
    assert s.value("hapax_grpc_requests_total", method="Complete", code="OK") == 3
    assert s.value("hapax_gateway_overhead_seconds_count", method="Complete") == 1
    flags = sorted(r.deduplicated for r in caplog.records if r.name == "hapaxd.access")
    assert flags == [False, True, True]


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Context:
    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None


async def test_interceptor_skips_health_and_bounds_unknown_hapax_methods() -> None:
    metrics = Metrics(settings_with(), CollectorRegistry())
    interceptor = ObservingInterceptor(CallObserver(metrics))

    async def ok(request: object, context: object) -> str:
        return "ok"

    handler = grpc.unary_unary_rpc_method_handler(ok)

    async def continuation(details: object) -> grpc.RpcMethodHandler | None:
        return None if details.method.endswith("/Missing") else handler  # type: ignore[attr-defined]

    async def intercept(method: str) -> grpc.RpcMethodHandler | None:
        return await interceptor.intercept_service(continuation, _Details(method))

    assert await intercept("/grpc.health.v1.Health/Check") is handler  # passed through
    assert await intercept("/hapax.v1.CompletionService/Missing") is None  # UNIMPLEMENTED
    known = await intercept("/hapax.v1.CompletionService/Complete")
    assert known is not handler
    assert await intercept("/hapax.v1.CompletionService/Complete") is known  # wrapped once
    for i in range(5):
        future = await intercept(f"/hapax.v1.Future/Method{i}")
        assert await future.unary_unary(None, _Context()) == "ok"
    assert await known.unary_unary(None, _Context()) == "ok"

    def count(method: str) -> float | None:
        return metrics.registry.get_sample_value(
            "hapax_grpc_requests_total", {"method": method, "code": "OK"}
        )

    assert count("other") == 5
    assert count("Complete") == 1
    methods = {
        s.labels["method"]
        for family in metrics.registry.collect()
        if family.name == "hapax_grpc_requests"
        for s in family.samples
    }
    assert methods == {
        "Complete",
        "StreamComplete",
        "Embed",
        "ListModels",
        "ListProviders",
        "other",
    }


async def test_a_cancelled_stream_is_counted_and_leaves_no_active_request(
    observe: Observe, access_log: AccessLog
) -> None:
    slow = {
        "name": "slow",
        "type": "local",
        "models": {"*": "local"},
        "options": {"chunk_delay": "0.05"},
    }
    observed = await observe(settings_with(providers=[slow]))
    call = observed.stub.StreamComplete(pb.StreamCompleteRequest(prompt="a b c d e f g h"))
    await call.read()
    s = await observed.samples()
    assert s.value("hapax_grpc_active_requests", method="StreamComplete") == 1
    call.cancel()
    await access_log.wait_for(1)  # the server side notices the cancellation on its own time
    (line,) = access_log.records
    assert line.code == "CANCELLED"
    s = await observed.samples()
    assert s.value("hapax_grpc_active_requests", method="StreamComplete") == 0
    assert s.value("hapax_grpc_requests_total", method="StreamComplete", code="CANCELLED") == 1
    assert s.value("hapax_errors_total", type="CANCELLED") == 1
