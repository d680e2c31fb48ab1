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
        second = int(record.created)
        cached, stamp = self._stamp
        if second != cached:  # strftime once a second, not once a line
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        entry: dict[str, Any] = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info:  # for operators' eyes only: clients never see a traceback
            entry["error"] = repr(record.exc_info[1])
            entry["traceback"] = self.formatException(record.exc_info)
        return _encode(entry)


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
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
