"""Log format and level follow `logging.format` and `logging.level`."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hapaxd.config import LoggingSettings
from hapaxd.observability.log_format import JsonFormatter, configure_logging


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


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them, so does the line
    | st.text()
    | st.builds(object),  # not JSON: written as its str(), as default=str does
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(["timestamp", "level", "logger", "message", "request_id", "é"]) | st.text()


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(_KEYS, _VALUES, max_size=6),
    created=st.floats(0, 4e9),
    message=st.text(),
    level=st.sampled_from(["INFO", "WARNING", "ERROR"]),
)
def test_a_json_line_is_what_json_dumps_writes(
    fields: dict[str, object], created: float, message: str, level: str
) -> None:
    """A line is exactly json.dumps of the whole entry, whatever the fields hold (NaN, text
    that is not ASCII, values that are not JSON, a field named like a head key: it wins, as in
    a dict): what log shippers parse does not depend on how the line is made."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created)))
    entry = {
        "timestamp": f"{stamp}.{int((created - int(created)) * 1000):03d}Z",
        "level": level.lower(),
        "logger": "hapaxd.test",
        "message": message,
        **fields,
    }
    line = JsonFormatter().line(created, level, "hapaxd.test", message, fields)
    assert line == json.dumps(entry, default=str)
