"""The metrics side port: formats, credentials, liveness and readiness, and turning it off."""

from __future__ import annotations

import base64

import grpc
import pytest

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.config import MetricsSettings
from hapaxd.observability import Observability
from hapaxd.observability.side_port import Credentials
from tests.fakes.upstream import Fail, FakeUpstream
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.logcapture import METRICS_PASSWORD, METRICS_TOKEN


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_metrics_are_served_as_prometheus_text_by_default(observe: Observe) -> None:
    observed = await observe(settings_with())
    await observed.stub.Complete(pb.CompleteRequest(prompt="hi"))
    status, text, headers = await observed.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'hapax_grpc_requests_total{code="OK",method="Complete"} 1.0' in text
    assert "# EOF" not in text


async def test_openmetrics_is_served_when_the_accept_header_asks(observe: Observe) -> None:
    observed = await observe(settings_with())
    await observed.stub.Complete(pb.CompleteRequest(prompt="hi"))
    status, text, headers = await observed.get(
        "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    assert 'hapax_grpc_requests_total{code="OK",method="Complete"} 1.0' in text


async def test_bearer_token_is_required_when_configured(observe: Observe) -> None:
    observed = await observe(settings_with(metrics={"bearer_token_env": "METRICS_TOKEN"}))
    status, text, headers = await observed.get("/metrics")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert "hapax_" not in text
    for wrong in ("Bearer nope", f"Bearer {METRICS_TOKEN}x", basic("u", METRICS_TOKEN), "junk"):
        assert (await observed.get("/metrics", {"Authorization": wrong}))[0] == 401
    status, text, _ = await observed.get("/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and "hapax_grpc_requests_total" in text


async def test_basic_auth_is_required_when_configured(observe: Observe) -> None:
    observed = await observe(
        settings_with(
            metrics={
                "basic_auth_user": "prometheus",
                "basic_auth_password_env": "METRICS_PASSWORD",
            }
        )
    )
    status, _, headers = await observed.get("/metrics")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    for wrong in (
        basic("prometheus", "wrong"),
        basic("other", METRICS_PASSWORD),
        basic("prometheus", METRICS_PASSWORD + "x"),
        "Basic !!notbase64!!",
        f"Bearer {METRICS_PASSWORD}",
    ):
        assert (await observed.get("/metrics", {"Authorization": wrong}))[0] == 401
    good = basic("prometheus", METRICS_PASSWORD)
    assert (await observed.get("/metrics", {"Authorization": good}))[0] == 200


async def test_probes_need_no_credential(observe: Observe) -> None:
    observed = await observe(settings_with(metrics={"bearer_token_env": "METRICS_TOKEN"}))
    assert (await observed.get("/healthz"))[0] == 200
    assert (await observed.get("/readyz"))[0] == 200


def test_credentials_accept_either_scheme_when_both_are_set() -> None:
    settings = MetricsSettings(
        bearer_token="tok-123456", basic_auth_user="u", basic_auth_password="pw-123456"
    )
    credentials = Credentials(settings)
    assert credentials.accepts("Bearer tok-123456")
    assert credentials.accepts("bearer   tok-123456")
    assert credentials.accepts(basic("u", "pw-123456"))
    assert not credentials.accepts(basic("u", "tok-123456"))
    assert not credentials.accepts(None)
    assert "Bearer" in credentials.challenge() and "Basic" in credentials.challenge()
    assert Credentials(MetricsSettings()).accepts(None)


async def test_readyz_follows_provider_usability_and_shutdown(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    settings = settings_with(
        providers=[openai_provider(fake_upstream, "only", api_key_env="OPENAI_TEST_KEY")],
        circuit_breaker={"failure_threshold": 1, "timeout": "1h"},
        router={"retry": {"max_attempts": 1}},
    )
    observed = await observe(settings)
    assert (await observed.get("/readyz"))[0] == 200
    fake_upstream.script("openai.chat", Fail(500))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="hi"))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    status, text, _ = await observed.get("/readyz")  # the only breaker is open now
    assert status == 503, text
    assert (await observed.get("/healthz"))[0] == 200  # alive all the same
    samples = await observed.samples()
    assert samples.value("hapax_circuit_breaker_state", provider="only") == 2
    assert samples.value("hapax_circuit_breaker_transitions_total", provider="only", to="open") == 1


async def test_readyz_is_503_once_shutdown_begins(observe: Observe) -> None:
    observed = await observe(settings_with())
    assert (await observed.get("/readyz"))[0] == 200
    observed.obs.draining()
    assert (await observed.get("/readyz"))[0] == 503
    assert (await observed.get("/healthz"))[0] == 200


async def test_metrics_can_be_turned_off() -> None:
    obs = Observability(settings_with(metrics={"enabled": False}), environ={})
    await obs.start()
    assert obs.server is None and obs.metrics_port == 0
    await obs.stop()
