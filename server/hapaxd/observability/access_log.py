"""The access log: one JSON-ready line per hapax.v1 RPC, built here from the call's CallRecord
when the call ends (call_observer.py calls `write`; log_format.py renders it as JSON).

Fields: request_id, method, code, latency_ms, model, provider, attempts, token counts,
deduplicated, client, peer; error_reason and error on failure; trace_id when tracing is on;
prompt and completion (filtered) only when logging.log_content is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hapaxd.calls.record import CallRecord
from hapaxd.core.errors import MalformedRequest

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
        # makeRecord + handle is logger.info without the stack walk that finds the caller.
        record = self._log.makeRecord(
            self._log.name,
            level,
            __file__,
            0,
            "%s %s",
            (method, code),
            None,
            extra=fields,
        )
        self._log.handle(record)
