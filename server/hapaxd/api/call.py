"""A gRPC call's record and its end: the record opened from the servicer context once, when the
call begins (`open_record`: metadata, peer, deadline, and how to read the client certificate),
handed to the servicer through a context variable; and a failed call ended with the status its
ErrorView says (`abort`). Transport layer.
"""

from __future__ import annotations

import contextvars
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from hapaxd.api.status import retry_after, status_of
from hapaxd.calls import metadata
from hapaxd.calls.errors import ErrorView
from hapaxd.calls.record import CallRecord
from hapaxd.calls.record import open_record as _open

REQUEST_ID = metadata.REQUEST_ID_KEY

_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "hapax_call", default=None
)


def open_record(context: grpc.aio.ServicerContext, method: str = "") -> CallRecord:
    """Open the call's record with everything read from the servicer context, once, before the
    first await. After that the context is never asked for peer, metadata or deadline again: in
    grpcio 1.85 `peer()` on a call whose transport is gone reads freed memory and crashes the
    process (tests/transport/test_dropped_connections.py). The client certificate is read only
    when the door asks, before the call's first await."""
    record = _open(
        method,
        context.invocation_metadata() or (),
        peer=context.peer() or "",
        deadline=context.time_remaining(),
        certificate=lambda: _certificate(context),
    )
    _current.set(record)
    return record


def _certificate(context: grpc.aio.ServicerContext) -> tuple[str, list[str]]:
    peer = context.auth_context()
    subject = b"".join(peer.get("x509_subject", ())).decode("utf-8", "replace")
    sans = [v.decode("utf-8", "replace") for v in peer.get("x509_subject_alternative_name", ())]
    return subject, sans


def record_of(context: grpc.aio.ServicerContext) -> CallRecord:
    """The record the observing wrapper opened for this call, or one opened now (none)."""
    record = _current.get()
    return record if record is not None and record.request_id else open_record(context)


async def abort(context: grpc.aio.ServicerContext, view: ErrorView, record: CallRecord) -> NoReturn:
    """End the call with the view's status (raises grpc's AbortError, as context.abort does),
    its retry delay also as trailers and x-request-id with them."""
    status = rpc_status.to_status(status_of(view))
    trailers = (*status.trailing_metadata, *retry_after(view), (REQUEST_ID, record.request_id))
    await context.abort(status.code, status.details, trailers)
    raise AssertionError("unreachable: abort raises")


async def refuse(
    context: grpc.aio.ServicerContext, error: BaseException, record: CallRecord
) -> NoReturn:
    """End a call that failed outside the call pipeline (the door of other services)."""
    await abort(context, record.failed(error), record)
