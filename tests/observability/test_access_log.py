"""One JSON log line per RPC, and the request id carried everywhere: logs, response metadata,
error details and the upstream request."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest

from hapax.v1 import admin_service_pb2
from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability.log_format import JsonFormatter
from tests.fakes.upstream import Fail, FakeUpstream
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.status_details import details_of

FIELDS = {
    "timestamp",
    "level",
    "request_id",
    "method",
    "code",
    "latency_ms",
    "model",
    "provider",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "deduplicated",
    "client",
    "peer",
}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "hapaxd.access"]


async def test_one_json_line_per_rpc_with_every_field(
    observe: Observe, caplog: pytest.LogCaptureFixture
) -> None:
    observed = await observe(settings_with())
    caplog.set_level(logging.INFO, logger="hapaxd.access")
    await observed.stub.Complete(
        pb.CompleteRequest(prompt="hi there"), metadata=(("x-request-id", "req-log-1"),)
    )
    async for _ in observed.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="hi"), metadata=(("x-request-id", "req-log-2"),)
    ):
        pass
    with pytest.raises(grpc.aio.AioRpcError):
        await observed.stub.Complete(pb.CompleteRequest(), metadata=(("x-request-id", "req-3"),))
    await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())

    lines = access_lines(caplog)
    assert [line["method"] for line in lines] == [
        "Complete",
        "StreamComplete",
        "Complete",
        "ListProviders",
    ]
    for line in lines:
        assert FIELDS <= set(line), FIELDS - set(line)
        assert line["level"] == "info"
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert line["request_id"]
        assert line["client"] == ""
    ok, stream, failed, admin = lines
    assert ok["request_id"] == "req-log-1" and ok["code"] == "OK"
    assert (ok["model"], ok["provider"], ok["attempts"]) == ("default", "local", 1)
    assert ok["prompt_tokens"] == 2 and ok["completion_tokens"] > 0
    assert ok["deduplicated"] is False and ok["latency_ms"] > 0
    assert stream["request_id"] == "req-log-2" and stream["code"] == "OK"
    assert stream["completion_tokens"] > 0
    assert failed["request_id"] == "req-3" and failed["code"] == "INVALID_ARGUMENT"
    assert failed["error_reason"] == "INVALID_REQUEST"
    assert admin["code"] == "OK"
    assert "prompt" not in ok and "hi there" not in json.dumps(lines)  # no content by default


async def test_request_id_reaches_metadata_error_details_logs_and_upstream(
    observe: Observe, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(
        providers=[openai_provider(fake_upstream, "up", api_key_env="OPENAI_TEST_KEY")],
        router={"retry": {"max_attempts": 1}},
    )
    observed = await observe(settings)
    caplog.set_level(logging.INFO, logger="hapaxd.access")

    call = observed.stub.Complete(
        pb.CompleteRequest(prompt="hi"), metadata=(("x-request-id", "trace-me-42"),)
    )
    reply = await call
    assert reply.id == "trace-me-42"
    assert dict(await call.trailing_metadata())["x-request-id"] == "trace-me-42"
    assert fake_upstream.last.headers["x-request-id"] == "trace-me-42"

    fake_upstream.script("openai.chat", Fail(500))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(
            pb.CompleteRequest(prompt="again"), metadata=(("x-request-id", "trace-me-43"),)
        )
    details = details_of(caught.value)
    assert details.info is not None and details.info.metadata["request_id"] == "trace-me-43"
    assert fake_upstream.last.headers["x-request-id"] == "trace-me-43"
    # A failed call's headers are its trailers (trailers-only): the request id is there.
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "trace-me-43"

    lines = access_lines(caplog)
    assert [(line["request_id"], line["code"]) for line in lines] == [
        ("trace-me-42", "OK"),
        ("trace-me-43", "UNAVAILABLE"),
    ]
    assert lines[1]["error_reason"] == "NO_PROVIDER_AVAILABLE"
    assert (lines[1]["model"], lines[1]["provider"], lines[1]["attempts"]) == ("default", "up", 1)


async def test_generated_request_id_is_the_same_everywhere(
    observe: Observe, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(providers=[openai_provider(fake_upstream, "up")])
    observed = await observe(settings)
    caplog.set_level(logging.INFO, logger="hapaxd.access")
    call = observed.stub.StreamComplete(
        pb.StreamCompleteRequest(prompt="hi"), metadata=(("x-request-id", "not valid!"),)
    )
    messages = [m async for m in call]
    generated = dict(await call.trailing_metadata())["x-request-id"]
    assert generated != "not valid!" and messages[0].id == generated
    assert fake_upstream.last.headers["x-request-id"] == generated
    assert [line["request_id"] for line in access_lines(caplog)] == [generated]


async def test_content_is_logged_only_when_configured_and_then_redacted(
    observe: Observe, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(
        logging={"log_content": True, "redact_patterns": [r"\b\d{4}-\d{4}-\d{4}-\d{4}\b"]}
    )
    observed = await observe(settings)
    caplog.set_level(logging.INFO, logger="hapaxd.access")
    await observed.stub.Complete(pb.CompleteRequest(prompt="card 4111-1111-1111-1111 please"))
    async for _ in observed.stub.StreamComplete(pb.StreamCompleteRequest(prompt="stream me")):
        pass
    unary, stream = access_lines(caplog)
    assert unary["prompt"] == "card [REDACTED] please"
    assert "[REDACTED]" in unary["completion"] and "4111" not in unary["completion"]
    assert stream["prompt"] == "stream me"
    assert stream["completion"].endswith("You said: stream me")


def test_the_line_record_is_what_logger_info_would_make() -> None:
    """The access log fills its records from a template (no LogRecord.__init__ per line): the
    record carries the same attributes, level, message, logger and clock as one logging makes,
    so handlers, filters and formatters see no difference."""
    from hapaxd.calls.record import CallRecord
    from hapaxd.observability.access_log import AccessLog

    logger = logging.getLogger("hapaxd.access.test-template")
    logger.propagate = False
    kept: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = kept.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        info = CallRecord(method="Complete", request_id="r-1", model="m", provider="p")
        AccessLog(logger=logger).write("Complete", info, "OK", 0.0123, None, "")
        info.error_reason = "MALFORMED_REQUEST"
        AccessLog(logger=logger).write("Complete", info, "INVALID_ARGUMENT", 0.001, None, "")
    finally:
        logger.removeHandler(handler)
    made, warned = kept
    fields = {k: v for k, v in vars(made).items() if k not in vars(logging.LogRecord(*_ARGS))}
    reference = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "%s %s", ("a", "b"), None)
    assert set(vars(made)) == set(vars(reference)) | set(fields)
    assert made.getMessage() == "Complete OK" and made.levelname == "INFO"
    assert warned.levelno == logging.WARNING and warned.levelname == "WARNING"
    assert made.name == logger.name and made.exc_info is None and made.args is None
    assert abs(made.created - reference.created) < 5
    assert made.msecs == pytest.approx((made.created % 1) * 1000, abs=1e-3)
    assert made.relativeCreated == pytest.approx(reference.relativeCreated, abs=5000)
    assert fields["request_id"] == "r-1" and fields["latency_ms"] == 12.3
    line = json.loads(JsonFormatter().format(made))
    assert line["message"] == "Complete OK" and line["level"] == "info"
    assert line["logger"] == logger.name and line["request_id"] == "r-1"


_ARGS = ("", 0, "", 0, "", (), None)


def test_the_direct_line_is_the_formatters_line_and_any_other_listener_gets_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logged as `hapaxd serve` logs (one JSON handler on the root, nothing else listening), the
    access log writes the line the formatter would render from the record, with the same
    fields in the same order; once anything else listens (a handler on the way, a filter, a
    second root handler), records go through logging again."""
    import io

    from hapaxd.calls.record import CallRecord
    from hapaxd.config import LoggingSettings
    from hapaxd.observability import access_log, log_format
    from hapaxd.observability.access_log import AccessLog

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(log_format.sys, "stderr", stream)
    monkeypatch.setattr(access_log.time, "time", lambda: 1_700_000_000.25)
    logger = logging.getLogger("hapaxd.access")
    try:
        log_format.configure_logging(LoggingSettings(level="info", format="json"))
        assert log_format.direct_sink(logger, logging.INFO) is root.handlers[0]
        info = CallRecord(method="Complete", request_id="r-9", model="m", provider="p")
        info.client, info.peer = "search", "ipv4:127.0.0.1:1"
        made = AccessLog(logger=logger)
        made.write("Complete", info, "OK", 0.0123, None, "")
        direct = stream.getvalue()
        record = made._record(logging.INFO, "Complete", "OK", json.loads(direct))
        record.created, record.msecs = 1_700_000_000.25, 250.0
        for key in ("timestamp", "level", "logger", "message"):
            del record.__dict__[key]
        assert direct == JsonFormatter().format(record) + "\n"
        assert list(json.loads(direct))[:6] == [
            "timestamp",
            "level",
            "logger",
            "message",
            "request_id",
            "method",
        ]
        assert json.loads(direct)["timestamp"] == "2023-11-14T22:13:20.250Z"

        kept: list[logging.LogRecord] = []
        other = logging.Handler()
        other.emit = kept.append  # type: ignore[method-assign]
        for attach, detach in (
            (lambda: logger.addHandler(other), lambda: logger.removeHandler(other)),
            (lambda: root.addHandler(other), lambda: root.removeHandler(other)),
            (lambda: logger.addFilter(bool), lambda: logger.removeFilter(bool)),
        ):
            attach()
            try:
                assert log_format.direct_sink(logger, logging.INFO) is None
            finally:
                detach()
        root.addHandler(other)
        made.write("Complete", info, "OK", 0.0123, None, "")
        root.removeHandler(other)
        assert [r.getMessage() for r in kept] == ["Complete OK"]
        assert stream.getvalue().count("\n") == 2  # the JSON handler had its line too
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
