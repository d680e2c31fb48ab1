"""Secrets never reach a log line. Each App has its own Redactor, which knows that App's
provider API keys, metrics credentials and `logging.redact_patterns`, plus the generic shapes
every redactor masks (Authorization values, bearer tokens, key-shaped strings).

logging's record factory is process-wide, so it is hooked once (`attach`); it redacts every
record's message, arguments and traceback with each redactor attached at that moment. An App
attaches its redactor when built and detaches it when stopped (one dropped unstopped goes with
it), so its secrets live exactly as long as it does and two gateways in one process share only
the hook: while both run, a line is masked for both.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
import weakref
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
    ("aiza", r"\bAIza[0-9A-Za-z_-]{35}"),  # Google API keys (Gemini API)
)


class Redactor:
    """Masks known secrets and patterns in text. Thread-safe; secrets are only ever added."""

    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._builtin = [(trigger, re.compile(p)) for trigger, p in BUILTIN_PATTERNS]
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._combined: re.Pattern[str] | None = None
        self.add(secrets, patterns)

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

    def redact_record(self, record: logging.LogRecord) -> None:
        """Mask the record's message (arguments merged in), traceback and stack in place."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is
            message = str(record.msg)
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = self.redact(text)
            record.__dict__["error"] = self.redact(repr(record.exc_info[1]))
            record.__dict__["traceback"] = record.exc_text
            record.exc_info = None  # formatters now use the redacted exc_text
        elif record.exc_text:  # rendered by a redactor before this one
            record.exc_text = self.redact(record.exc_text)
            for key in ("error", "traceback"):
                if isinstance(record.__dict__.get(key), str):
                    record.__dict__[key] = self.redact(record.__dict__[key])
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)


def _masker(match: re.Match[str]) -> str:
    """Mask the match, keeping a named `keep` group (such as `authorization: Bearer `)."""
    keep = match.groupdict().get("keep")
    return (keep or "") + MASK


# Weak references, so an App dropped without stop() takes its redactor along; a plain tuple,
# replaced whole on attach and detach, because the factory reads it for every log record.
_attached: tuple[weakref.ref[Redactor], ...] = ()
_hook_lock = threading.Lock()
_hooked = False


def _live(without: Redactor | None = None) -> tuple[weakref.ref[Redactor], ...]:
    return tuple(ref for ref in _attached if ref() is not None and ref() is not without)


def attach(redactor: Redactor) -> Redactor:
    """Redact every log record with `redactor` from now on (the factory is hooked once)."""
    global _attached, _hooked
    with _hook_lock:
        _attached = (*_live(without=redactor), weakref.ref(redactor))
        if not _hooked:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                for ref in _attached:
                    each = ref()
                    if each is not None:
                        each.redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _hooked = True
    return redactor


def detach(redactor: Redactor) -> None:
    global _attached
    with _hook_lock:
        _attached = _live(without=redactor)


def attached_secrets() -> set[str]:
    """The literal secrets log records are redacted for now: those of every attached redactor."""
    redactors = [ref() for ref in _attached]
    return set().union(*(r.secrets() for r in redactors if r is not None))
