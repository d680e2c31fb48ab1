"""A session-wide capture of every log record the whole suite produces; at the end of the run
none may hold a secret the tests configured (tests/conftest.py turns it on for every test)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hapaxd.observability import redaction
from hapaxd.observability.log_format import JsonFormatter

# Secrets some tests configure; none may ever appear in a log record.
OPENAI_KEY = "sk-obs-test-openai-key-0123456789abcdef"
BACKUP_KEY = "backup-provider-secret-key-9876543210"
METRICS_TOKEN = "metrics-bearer-token-5f0e9c1d"
METRICS_PASSWORD = "metrics-basic-password-7a3b"
SECRETS = {
    "OPENAI_TEST_KEY": OPENAI_KEY,
    "BACKUP_TEST_KEY": BACKUP_KEY,
    "METRICS_TOKEN": METRICS_TOKEN,
    "METRICS_PASSWORD": METRICS_PASSWORD,
}


class _Capture(logging.Handler):
    """Keeps every record, formatted as the gateway would log it (JSON, extras included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self.secrets: set[str] = set()  # every gateway's, gathered while it was live

    def emit(self, record: logging.LogRecord) -> None:
        self.secrets |= redaction.attached_secrets()
        try:
            self.lines.append(self.format(record) + " " + repr(vars(record)))
        except Exception:  # a record that cannot be formatted must not break the test run
            self.lines.append(repr(vars(record)))


def leaked(lines: list[str], secrets: set[str]) -> list[str]:
    return [line for line in lines if any(secret in line for secret in secrets)]


@pytest.fixture(scope="session", autouse=True)
def all_logs() -> Any:
    """Every log record from here to the end of the session; at the end, none may hold a secret
    used by these tests or configured in any gateway while it ran (its redactor knew them)."""
    capture = _Capture()
    root, hapaxd = logging.getLogger(), logging.getLogger("hapaxd")
    levels = root.level, hapaxd.level
    root.addHandler(capture)
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    hapaxd.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(levels[0])
    hapaxd.setLevel(levels[1])
    secrets = set(SECRETS.values()) | capture.secrets
    found = leaked(capture.lines, secrets)
    assert not found, f"{len(found)} log records hold a secret, e.g. {found[0][:300]}"
