"""The access log: one JSON-ready line per hapax.v1 RPC, built here from the call's CallRecord
when the call ends (call_observer.py calls `write`; log_format.py renders it as JSON).

Fields: request_id, method, code, latency_ms, model, provider, attempts, token counts,
deduplicated, client, peer; error_reason and error on failure; trace_id when tracing is on;
prompt and completion (filtered) only when logging.log_content is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from hapaxd.calls.record import CallRecord
from hapaxd.core.errors import MalformedRequest
from hapaxd.observability.log_format import direct_sink

log = logging.getLogger("hapaxd.access")

ContentFilter = Callable[[str], str]


def _prompt_text(request: Any) -> str:
    prompt = getattr(request, "prompt", "")
    messages = getattr(request, "messages", ())
    return "\n".join([*(m.content for m in messages), *([prompt] if prompt else [])])


class AccessLog:
    def __init__(
        self,
        *,
        trace_id: Callable[[], str] | None = None,
        content: ContentFilter | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self._trace_id = trace_id
        self._content = content
        self._log = logger
        self._template = vars(
            logging.LogRecord(logger.name, logging.INFO, __file__, 0, "", None, None, "write")
        )

    def enabled(self) -> bool:
        return self._log.isEnabledFor(logging.INFO)

    def write(
        self,
        method: str,
        info: CallRecord,
        code: str,
        elapsed: float,
        request: Any,
        completion: str,
    ) -> None:
        fields: dict[str, Any] = {
            "request_id": info.request_id,
            "method": method,
            "code": code,
            "latency_ms": round(elapsed * 1000, 3),
            "model": info.model,
            "provider": info.provider,
            "attempts": info.attempts,
            "prompt_tokens": info.prompt_tokens,
            "completion_tokens": info.completion_tokens,
            "deduplicated": info.deduplicated,
            "client": info.client,
            "peer": info.peer,
        }
        if info.error_reason:
            fields["error_reason"] = info.error_reason
            fields["error"] = info.error_message
        if self._trace_id is not None:
            fields["trace_id"] = self._trace_id()
        if self._content is not None:
            fields["prompt"] = self._content(_prompt_text(request))
            fields["completion"] = self._content(completion)
        # A request that could not even be decoded is the caller's fault, worth a warning; the
        # line is the only one written for it (no traceback).
        level = logging.WARNING if info.error_reason == MalformedRequest.reason else logging.INFO
        sink = direct_sink(self._log, level)
        if sink is None:
            self._log.handle(self._record(level, method, code, fields))
            return
        # Logged the standard way (hapaxd serve's one JSON handler, nothing else listening):
        # the line its formatter would make from the record, written as it would write it,
        # without the record and the logging machinery around it.
        name = logging.getLevelName(level)
        line = sink.formatter.line(time.time(), name, self._log.name, f"{method} {code}", fields)
        sink.write_line(line)

    def _record(
        self, level: int, method: str, code: str, fields: dict[str, Any]
    ) -> logging.LogRecord:
        """The line's LogRecord, filled from a template made once: what logger.info would
        build, without LogRecord.__init__'s per-record path, thread and process lookups (the
        line's source, thread and process never change) or the record factory (the message is
        the method and code, nothing to redact; the fields are the gateway's own, their error
        text scrubbed where it was made). About 6 us a call less; the same record."""
        record = _new_record(logging.LogRecord)
        values = record.__dict__
        values.update(self._template)
        now = time.time()
        values["created"] = now
        values["msecs"] = (now - int(now)) * 1000
        values["relativeCreated"] = (now - _START) * 1000
        values["msg"] = f"{method} {code}"
        values["levelno"] = level
        values["levelname"] = logging.getLevelName(level)
        values.update(fields)
        return record


_new_record = object.__new__
_START: float = logging._startTime  # type: ignore[attr-defined]  # relativeCreated's origin
