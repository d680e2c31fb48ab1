"""What one RPC did, gathered as it runs, for its log line and metrics.

The interceptor opens a CallInfo per RPC in a context variable (service.start_call, which reads
peer, metadata and deadline from the servicer context once, when the call begins); the servicer
and the router fill it in; the HTTP client reads the request id from it for the upstream header.
Plain Python.
"""

from __future__ import annotations

import contextvars
import dataclasses


@dataclasses.dataclass(slots=True)
class CallInfo:
    method: str = ""
    request_id: str = ""
    model: str = ""
    provider: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    deduplicated: bool = False
    client: str = ""  # an API key id once keys exist, never the key
    upstream_seconds: float = 0.0  # time spent waiting on upstream calls
    error_reason: str = ""
    error_message: str = ""  # what went wrong, capped, for the log line
    code: str = ""  # the status code the call was ended with, once the servicer chose one
    peer: str = ""  # read from the transport when the call began, never after
    caller: str = ""  # credential digest for deduplication, read when the call began
    deadline: float | None = None  # seconds the caller allowed, read when the call began


_current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "hapax_call", default=None
)


def current() -> CallInfo | None:
    return _current.get()


def begin(method: str = "", **fields: object) -> CallInfo:
    info = CallInfo(method=method, **fields)  # type: ignore[arg-type]
    _current.set(info)
    return info
