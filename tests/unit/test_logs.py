"""Log format and level follow `logging.format` and `logging.level`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hapaxd.config import LoggingSettings
from hapaxd.observability.log_format import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emitted(settings: LoggingSettings) -> str:
    configure_logging(settings)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out := io.StringIO())
    log = logging.getLogger("logs_test")
    log.info("served", extra={"request_id": "r-1"})
    log.warning("provider down")
    return out.getvalue()


def test_json_lines_carry_the_extra_fields(restore_root: None) -> None:
    lines = emitted(LoggingSettings(level="info", format="json")).splitlines()
    first = json.loads(lines[0])
    assert (first["level"], first["message"], first["request_id"]) == ("info", "served", "r-1")
    assert first["timestamp"].endswith("Z")
    assert json.loads(lines[1])["level"] == "warning"


def test_text_format_and_level(restore_root: None) -> None:
    out = emitted(LoggingSettings(level="warning", format="text"))
    assert "served" not in out, "info is below the warning level"
    assert "WARNING logs_test provider down" in out
    assert not out.lstrip().startswith("{")
