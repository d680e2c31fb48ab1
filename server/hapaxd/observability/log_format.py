"""Logging setup: one JSON object per line (or plain text), at the configured level."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from hapaxd.config import LoggingSettings

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


_encode = json.JSONEncoder(default=str).encode  # json.dumps(entry, default=str), made once


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = (-1, "")  # (a whole second, its rendering): one tuple, one swap

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and key[0] != "_"
        }
        if record.exc_info:  # for operators' eyes only: clients never see a traceback
            fields["error"] = repr(record.exc_info[1])
            fields["traceback"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields)

    def line(self, created: float, level: str, logger: str, message: str, fields: Any) -> str:
        """One line: the time, level, logger and message, then the fields in their order."""
        second = int(created)
        cached, stamp = self._stamp
        if second != cached:  # strftime once a second, not once a line
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        entry: dict[str, Any] = {
            "timestamp": f"{stamp}.{int((created - second) * 1000):03d}Z",
            "level": level.lower(),
            "logger": logger,
            "message": message,
        }
        entry.update(fields)
        return _encode(entry)


class JsonLines(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs for JSON; `write_line` writes a line its
    formatter already rendered, as `emit` would (the access log's direct path)."""

    formatter: JsonFormatter

    def write_line(self, text: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(text + self.terminator)
            self.stream.flush()


def direct_sink(logger: logging.Logger, level: int) -> JsonLines | None:
    """The JsonLines handler a record of `logger` at `level` would go to and nowhere else, when
    nothing in between (no handler, filter or propagation stop on the way to the root, whose
    only handler it is) would treat it otherwise; None when anything would. Checked per line,
    so a handler added later (a test's capture, an operator's) gets its records again."""
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    root = logging.root
    if root.filters or len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if type(handler) is not JsonLines or handler.filters or handler.level > level:
        return None
    return handler


def _not_a_vanished_caller(record: logging.LogRecord) -> bool:
    """grpc logs an error with a traceback for every stream whose caller went away while a
    message was being sent ("ExecuteBatchError raised in core"). That is the caller's doing,
    already in the access log as CANCELLED; one such line per dropped stream would let any
    caller flood the log. Other grpc records pass."""
    return not (record.levelno >= logging.ERROR and "ExecuteBatchError" in str(record.getMessage()))


def configure_logging(settings: LoggingSettings) -> None:
    grpc_core = logging.getLogger("grpc._cython.cygrpc")
    if _not_a_vanished_caller not in grpc_core.filters:
        grpc_core.addFilter(_not_a_vanished_caller)
    handler: logging.Handler
    if settings.format == "json":
        handler = JsonLines(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
