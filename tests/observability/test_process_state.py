"""Two gateways in one process share no state of their own: each App owns its redactor and its
metrics, and neither changes prometheus_client's process-wide settings."""

from __future__ import annotations

import gc
import logging

import prometheus_client
from prometheus_client import metrics as prometheus_metrics

from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability import redaction
from tests.fakes.upstream import FakeUpstream
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.logcapture import BACKUP_KEY, OPENAI_KEY


def _logged(all_logs: logging.Handler, text: str) -> str:
    """The line a record holding `text` was written as (redacted, formatted)."""
    before = len(all_logs.lines)  # type: ignore[attr-defined]
    logging.getLogger("hapaxd.test").warning("mistakenly logged %s", text)
    return "\n".join(all_logs.lines[before:])  # type: ignore[attr-defined]


async def test_each_gateway_owns_its_redactor(
    observe: Observe, fake_upstream: FakeUpstream, all_logs: logging.Handler
) -> None:
    a = await observe(
        settings_with(
            providers=[openai_provider(fake_upstream, "a", api_key_env="OPENAI_TEST_KEY")]
        )
    )
    b = await observe(
        settings_with(
            providers=[openai_provider(fake_upstream, "b", api_key_env="BACKUP_TEST_KEY")]
        )
    )
    assert a.obs.redactor is not b.obs.redactor
    assert OPENAI_KEY in a.obs.redactor.secrets() and BACKUP_KEY not in a.obs.redactor.secrets()
    assert BACKUP_KEY in b.obs.redactor.secrets() and OPENAI_KEY not in b.obs.redactor.secrets()
    # While both run, a line is masked for both.
    line = _logged(all_logs, f"{OPENAI_KEY} and {BACKUP_KEY}")
    assert OPENAI_KEY not in line and BACKUP_KEY not in line and "[REDACTED]" in line

    await a.app.stop(grace=0)
    # A stopped gateway's secrets are no longer held; the other one's still are.
    assert OPENAI_KEY not in redaction.attached_secrets()
    assert BACKUP_KEY in redaction.attached_secrets()
    line = _logged(all_logs, f"key {BACKUP_KEY}")
    assert BACKUP_KEY not in line and "key [REDACTED]" in line


async def test_each_gateway_counts_only_its_own_calls(observe: Observe) -> None:
    a, b = await observe(settings_with()), await observe(settings_with())
    assert a.obs.metrics.registry is not b.obs.metrics.registry
    await a.stub.Complete(pb.CompleteRequest(prompt="hello"))
    await a.stub.Complete(pb.CompleteRequest(prompt="again"))
    counted = {"method": "Complete", "code": "OK"}
    assert (await a.samples()).value("hapax_grpc_requests_total", **counted) == 2
    assert (await b.samples()).value("hapax_grpc_requests_total", **counted) in (None, 0)


async def test_created_series_are_dropped_without_touching_prometheus_client(
    observe: Observe,
) -> None:
    observed = await observe(settings_with())
    await observed.stub.Complete(pb.CompleteRequest(prompt="hello"))
    text = (await observed.samples()).text
    assert "hapax_grpc_requests_total" in text
    assert "_created" not in text
    # The library's process-wide switch is untouched: other registries keep their series.
    assert prometheus_metrics._use_created is True
    other = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("other_total", "another library's counter", registry=other).inc()
    assert "other_created" in prometheus_client.generate_latest(other).decode()


def test_a_redactor_dropped_without_detach_is_let_go() -> None:
    secret = "dropped-gateway-secret-0123456789"
    redactor = redaction.attach(redaction.Redactor([secret]))
    assert secret in redaction.attached_secrets()
    del redactor
    gc.collect()
    assert secret not in redaction.attached_secrets()
