"""What one call did, for its access-log line and metrics: the CallRecord, whichever door the call
came by.

A door opens it when the call begins, with everything read from the transport once (request id,
caller digest, the credential presented, peer, deadline): after that nothing asks the transport
again (in grpcio 1.85 `peer()` on a call whose transport is gone reads freed memory). The call
pipeline (calls/pipeline.py) fills it from what the router returned (the Route) or raised, and
the door's observer reads it when the call ends. The domain and the adapters never see it. Plain
Python: no grpc, no HTTP server.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from hapaxd.admission.keys import Caller
from hapaxd.calls import metadata
from hapaxd.calls.errors import ErrorView, view_of
from hapaxd.core.errors import GatewayError
from hapaxd.core.types import Route, Usage
from hapaxd.costs import Charge

log = logging.getLogger("hapaxd.calls")
Certificate = Callable[[], tuple[str, list[str]]]  # the peer's (subject, SANs)
MAX_CAUSE = 300  # characters of an error's technical cause kept for its log line


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
    code: str = ""  # the status code name the call was ended with, once one was chosen
    peer: str = ""  # read from the transport when the call began, never after
    # Who shares answers with whom (deduplication): the key id once admitted; with auth off, a
    # digest of the credential presented, read when the call began.
    caller: str = ""
    deadline: float | None = None  # seconds the caller allowed, read when the call began
    key: Caller | None = None  # the verified key and its policy; None when auth is off
    inside: bool = False  # counted among the calls in flight (calls/door.py Door)
    # The request headers ((name, value) pairs, names lower-case), read from the transport when
    # the call began; and, for a transport with client certificates, how to read the peer's
    # certificate (subject, subject alternative names), asked before the call's first await.
    headers: Sequence[tuple[str, Any]] = ()
    certificate: Certificate | None = None
    # For the usage ledger (ledger/): which door, when the call began (wall clock, and the
    # monotonic clock its time to first token is measured on), the caller's metadata tags, and
    # what the answer was: the upstream model, every token count, its charge.
    door: str = "grpc"
    started_at: float = dataclasses.field(default_factory=time.time)
    opened: float = dataclasses.field(default_factory=time.perf_counter)
    first_token_seconds: float | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    upstream_model: str = ""
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    charge: Charge | None = None
    # The response cache (cache/), when the call's model and key use it: what it did (hit,
    # semantic_hit, miss, refresh, bypass), a hit's age and similarity, and what a hit saved
    # (the original answer's cost and tokens; its own cost is 0).
    cache: str = ""
    cache_age: int | None = None
    similarity: float | None = None
    saved_cost_nanos: int | None = None
    saved_tokens: int = 0

    def admitted(self, key: Caller) -> None:
        """The call presented this key: from now on its id is the caller's identity."""
        self.key, self.client, self.caller = key, key.id, key.id

    def answered(self, route: Route, usage: Usage, charge: Charge | None = None) -> None:
        """Note what the router returned for an answered call, and what it cost."""
        self.provider, self.attempts, self.deduplicated = (
            route.provider,
            route.attempts,
            route.shared,
        )
        self.upstream_model = route.upstream_model
        self.upstream_seconds = route.upstream_seconds
        self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self.cached_prompt_tokens = usage.cached_prompt_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.charge = charge

    def first_token(self) -> None:
        """A stream's first chunk is on its way to the caller."""
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self.opened

    @property
    def reached_provider(self) -> bool:
        """The call was put to a provider (or shared the answer of one that was, or was answered
        from the cache): the calls the usage ledger keeps a row of. Refused calls (key, limits,
        validation) were not."""
        return self.attempts > 0 or self.deduplicated or self.cache_hit

    @property
    def cache_hit(self) -> bool:
        return self.cache in ("hit", "semantic_hit")

    def failed(self, error: BaseException) -> ErrorView:
        """Note why the call failed, and what its caller is told (our own bugs are logged here,
        once). Every door ends a failed call through this."""
        self.error_reason = error.reason if isinstance(error, GatewayError) else "INTERNAL"
        attempts = getattr(error, "attempts", None)
        if attempts:  # the upstream calls a failed request made, for its log line
            self.attempts, self.provider = len(attempts), attempts[-1].provider
        if isinstance(error, GatewayError):
            self.upstream_seconds = error.upstream_seconds
        else:
            log.error("internal error", exc_info=error, extra={"request_id": self.request_id})
        view = view_of(error, self.request_id)
        self.code = view.code
        cause = getattr(error, "cause", "")  # the technical cause: the log line's, never sent
        self.error_message = f"{view.message} ({cause[:MAX_CAUSE]})" if cause else view.message
        return view


def open_record(
    method: str,
    headers: Sequence[tuple[str, Any]],
    *,
    peer: str = "",
    deadline: float | None = None,
    certificate: Certificate | None = None,
    door: str = "grpc",
) -> CallRecord:
    """A call's record, opened from what its door read from the transport when it began."""
    request_id, caller = metadata.read(headers)
    return CallRecord(
        method,
        request_id=request_id,
        caller=caller,
        peer=peer,
        deadline=deadline,
        headers=headers,
        certificate=certificate,
        door=door,
    )
