"""Secrets never reach a log line: a process-wide log-record factory replaces the configured
provider API keys, metrics credentials, Authorization values, bearer tokens, key-shaped strings and
the configured `logging.redact_patterns` in every record's message, arguments and traceback."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 6  # shorter "secrets" would mask ordinary words
# Generic shapes: header values and well-known key formats, whatever their source. Each runs
# only when its trigger (lower-case) is in the text, which keeps ordinary lines cheap.
BUILTIN_PATTERNS = (
    (
        "authorization",
        r"(?i)(?P<keep>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)[^\s\"',;}]+",
    ),
    ("api", r"(?i)(?P<keep>\b(?:x-)?api[-_]key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]+"),
    ("bearer", r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    ("sk-", r"\bsk-[A-Za-z0-9_-]{16,}"),
)


class Redactor:
    """Masks known secrets and patterns in text. Thread-safe; secrets are only ever added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._builtin = [(trigger, re.compile(p)) for trigger, p in BUILTIN_PATTERNS]
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._combined: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
            for pattern in patterns:
                self._patterns.setdefault(pattern, re.compile(pattern))
            literal = sorted(self._secrets, key=len, reverse=True)
            self._combined = (
                re.compile("|".join(re.escape(s) for s in literal)) if literal else None
            )

    def secrets(self) -> set[str]:
        with self._lock:
            return set(self._secrets)

    def redact(self, text: str) -> str:
        if self._combined is not None:
            text = self._combined.sub(MASK, text)
        lowered = text.lower()
        for trigger, pattern in self._builtin:
            if trigger in lowered:
                text = pattern.sub(_masker, text)
        for pattern in tuple(self._patterns.values()):
            text = pattern.sub(_masker, text)
        return text


def _masker(match: re.Match[str]) -> str:
    """Mask the match, keeping a named `keep` group (such as `authorization: Bearer `)."""
    keep = match.groupdict().get("keep")
    return (keep or "") + MASK


REDACTOR = Redactor()
_installed = False
_install_lock = threading.Lock()


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep what there is
        message = str(record.msg)
    redacted = REDACTOR.redact(message)
    if redacted != message or record.args:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = REDACTOR.redact(text)
        record.__dict__["error"] = REDACTOR.redact(repr(record.exc_info[1]))
        record.__dict__["traceback"] = record.exc_text
        record.exc_info = None  # formatters now use the redacted exc_text
    if record.stack_info:
        record.stack_info = REDACTOR.redact(record.stack_info)


def install(secrets: Iterable[str] = (), patterns: Iterable[str] = ()) -> Redactor:
    """Add secrets and patterns to the process redactor and (once) install the record factory."""
    global _installed
    REDACTOR.add(secrets, patterns)
    with _install_lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True
    return REDACTOR
