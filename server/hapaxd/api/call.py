"""What one RPC did, for its access-log line and metrics: the CallRecord.

The transport owns it. The observer interceptor opens it when the call begins (`open_record`,
which reads peer, metadata and deadline from the servicer context once, before the first await),
the servicer fills it from what the router returned (the Route) or raised (the attempts), and the
interceptor reads it when the call ends. It reaches the servicer through a context variable that
only api/ and observability/ use: the domain and the adapters never see it (the request carries
its request id, the router returns what it did).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from hapaxd.admission.keys import Caller
from hapaxd.api import metadata
from hapaxd.api.status import retry_after, to_rpc_status
from hapaxd.core.errors import GatewayError
from hapaxd.core.types import Route, Usage

log = logging.getLogger("hapaxd.service")
REQUEST_ID = metadata.REQUEST_ID_KEY
MAX_CAUSE = 300  # characters of an error's technical cause kept for its log line
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}  # 3 -> "INVALID_ARGUMENT"


@dataclasses.dataclass(slots=True)
class CallRecord:
    method: str = ""
    request_id: str = ""
    model: str = ""
    provider: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    deduplicated: bool = False
    client: str = ""  # the API key's id, never the key; empty when auth is off
    upstream_seconds: float = 0.0  # time spent waiting on upstream calls
    error_reason: str = ""
    error_message: str = ""  # what went wrong, capped, for the log line
    code: str = ""  # the status code the call was ended with, once the servicer chose one
    peer: str = ""  # read from the transport when the call began, never after
    # Who shares answers with whom (deduplication): the key id once admitted; with auth off, a
    # digest of the credential presented, read when the call began.
    caller: str = ""
    deadline: float | None = None  # seconds the caller allowed, read when the call began
    key: Caller | None = None  # the verified key and its policy; None when auth is off
    inside: bool = False  # counted among the calls in flight (api/admission.py Door)

    def admitted(self, key: Caller) -> None:
        """The call presented this key: from now on its id is the caller's identity."""
        self.key, self.client, self.caller = key, key.id, key.id

    def answered(self, route: Route, usage: Usage) -> None:
        """Note what the router returned for an answered call."""
        self.provider, self.attempts, self.deduplicated = (
            route.provider,
            route.attempts,
            route.shared,
        )
        self.upstream_seconds = route.upstream_seconds
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "hapax_call", default=None
)


def open_record(context: grpc.aio.ServicerContext, method: str = "") -> CallRecord:
    """Open the call's record with everything read from the servicer context, once, before the
    first await. After that the context is never asked for peer, metadata or deadline again: in
    grpcio 1.85 `peer()` on a call whose transport is gone reads freed memory and crashes the
    process (tests/transport/test_dropped_connections.py)."""
    request_id, caller = metadata.read(context.invocation_metadata())
    record = CallRecord(
        method,
        request_id=request_id,
        caller=caller,
        peer=context.peer() or "",
        deadline=context.time_remaining(),
    )
    _current.set(record)
    return record


def record_of(context: grpc.aio.ServicerContext) -> CallRecord:
    """The record the interceptor opened for this call, or one opened now (no interceptor)."""
    record = _current.get()
    return record if record is not None and record.request_id else open_record(context)


def failed(error: BaseException, info: CallRecord) -> status_pb2.Status:
    """Note in the record why the call failed, and the google.rpc.Status it ends with (our own
    bugs are logged here, once). Every door ends a failed call through this."""
    request_id = info.request_id
    info.error_reason = error.reason if isinstance(error, GatewayError) else "INTERNAL"
    attempts = getattr(error, "attempts", None)
    if attempts:  # the upstream calls a failed request made, for its log line
        info.attempts, info.provider = len(attempts), attempts[-1].provider
    if isinstance(error, GatewayError):
        info.upstream_seconds = error.upstream_seconds
    else:
        log.error("internal error", exc_info=error, extra={"request_id": request_id})
    rich = to_rpc_status(error, request_id)
    info.code = CODE_NAMES.get(rich.code, "UNKNOWN")
    cause = getattr(error, "cause", "")  # the technical cause: the log line's, never the caller's
    info.error_message = f"{rich.message} ({cause[:MAX_CAUSE]})" if cause else rich.message
    return rich


async def abort(context: grpc.aio.ServicerContext, error: BaseException, info: CallRecord) -> None:
    """End the call with the mapped status; raises grpc's AbortError, as context.abort does."""
    rich = failed(error, info)
    status = rpc_status.to_status(rich)
    trailers = (*status.trailing_metadata, *retry_after(rich), (REQUEST_ID, info.request_id))
    await context.abort(status.code, status.details, trailers)
