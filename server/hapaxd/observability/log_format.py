"""Logging setup: one JSON object per line (or plain text), at the configured level."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from hapaxd.config import LoggingSettings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:  # for operators' eyes only: clients never see a traceback
            entry["error"] = repr(record.exc_info[1])
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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
