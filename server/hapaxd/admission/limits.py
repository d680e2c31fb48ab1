"""Rate limits per API key: token buckets for requests and tokens per minute, and a cap on the
key's streams in flight.

A key's requests-per-minute bucket holds up to its limit and refills at limit/60 a second; each
call takes 1. Its tokens-per-minute bucket works alike; a call takes the tokens estimated from
its text at admission (`estimate_tokens`), and once the upstream reports its usage the
difference is charged or refunded (`Ticket.settle`), so the bucket may go into debt and later
calls wait it out. A call that ends without usage keeps its estimate when anything reached the
caller, plus what did (a stream abandoned or broken after some chunks); only a call that
delivered nothing is refunded. A call is admitted only when every bucket it needs has room; a
refused call takes nothing. Where the buckets live is the Store: `LocalStore` (this process, the
default) or `admission/redis_store.py` (shared by every replica). Plain Python: no grpc.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from hapaxd.admission.keys import Caller
from hapaxd.core.errors import LimitsUnavailable, RateLimited
from hapaxd.core.events import LimiterUnavailable, Listeners, RateLimitHit, emit
from hapaxd.core.types import AnyRequest, EmbeddingRequest

REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"
STREAMS = "concurrent_streams"
STREAM_RETRY_AFTER = 1.0  # a stream slot has no refill rate; this is the hint to wait
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with GPT-style tokenizers
TOKENS_PER_MESSAGE = 3  # role and framing per message


def estimate_tokens(request: AnyRequest) -> int:
    """Prompt tokens a request will be charged at admission: its text at four characters a
    token, plus a few per message. Usage reported after the call corrects it."""
    if isinstance(request, EmbeddingRequest):
        return math.ceil(sum(len(text) for text in request.inputs) / CHARS_PER_TOKEN)
    chars = sum(len(m.content) for m in request.messages)
    if request.tools:
        chars += sum(
            len(t.description) + len(t.parameters.text if t.parameters else "")
            for t in request.tools
        )
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)


@dataclasses.dataclass(slots=True)
class Bucket:
    """A token bucket: holds up to `capacity`, refills at `rate` a second."""

    capacity: float
    rate: float
    level: float
    stamp: float

    @classmethod
    def full(cls, per_minute: int, now: float) -> Bucket:
        return cls(per_minute, per_minute / 60.0, per_minute, now)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait(self, cost: float) -> float:
        """Seconds until `cost` fits (0: now). A cost over the capacity fits a full bucket."""
        need = min(cost, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate


class StoreUnavailable(Exception):
    """The store could not be asked (Redis down, timed out); the Limiter applies the fail mode."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ask:
    """What one admission asks of a key's limits: a request (rpm), `tokens` (tpm) and, for a
    stream, a slot among `streams` (its `lease` names it until released)."""

    client: str
    rpm: int | None = None
    tpm: int | None = None
    tokens: int = 0
    streams: int | None = None
    lease: str = ""


class Store(Protocol):
    """Where the buckets and stream slots live. `take` admits (None) or names the first limit
    that has no room and the wait, taking nothing then; `adjust` charges (+) or refunds (-)
    tokens after the call and `release` frees a stream slot, neither waiting for the store."""

    name: str

    async def take(self, ask: Ask) -> tuple[str, float] | None: ...

    def adjust(self, client: str, tpm: int, tokens: int) -> None: ...

    def release(self, client: str, lease: str) -> None: ...

    def streams_in_flight(self, client: str) -> int: ...

    async def aclose(self) -> None: ...


class LocalStore:
    """Buckets in this process, by key id; a bucket is rebuilt when its key's limit changes."""

    name = "local"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._streams: dict[str, int] = {}  # key id -> its streams in flight

    def _bucket(self, client: str, limit: str, per_minute: int, now: float) -> Bucket:
        bucket = self._buckets.get((client, limit))
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[(client, limit)] = Bucket.full(per_minute, now)
        else:
            bucket.refill(now)
        return bucket

    async def take(self, ask: Ask) -> tuple[str, float] | None:
        return self.take_now(ask)

    def take_now(self, ask: Ask) -> tuple[str, float] | None:
        client = ask.client
        if ask.streams and self._streams.get(client, 0) >= ask.streams:
            return STREAMS, STREAM_RETRY_AFTER
        now = self._clock()
        wanted = [(REQUESTS, ask.rpm, 1), (TOKENS, ask.tpm, ask.tokens)]
        buckets = [(n, self._bucket(client, n, pm, now), c) for n, pm, c in wanted if pm]
        for name, bucket, cost in buckets:
            wait = bucket.wait(cost)
            if wait > 0:
                return name, wait
        for _, bucket, cost in buckets:
            bucket.level -= cost
        if ask.streams:
            self._streams[client] = self._streams.get(client, 0) + 1
        return None

    def adjust(self, client: str, tpm: int, tokens: int) -> None:
        bucket = self._bucket(client, TOKENS, tpm, self._clock())
        bucket.level = min(bucket.capacity, bucket.level - tokens)

    def release(self, client: str, lease: str) -> None:
        left = self._streams.get(client, 0) - 1
        if left > 0:
            self._streams[client] = left
        else:
            self._streams.pop(client, None)

    def streams_in_flight(self, client: str) -> int:
        return self._streams.get(client, 0)

    async def aclose(self) -> None:
        return None


def delivered_tokens(chars: int) -> int:
    """Tokens charged for `chars` characters of an answer that reached the caller without its
    usage (a stream that ended early), by the rule estimate_tokens uses."""
    return math.ceil(chars / CHARS_PER_TOKEN)


class Ticket:
    """One admitted call, settled once when it ends with the tokens the upstream reported:
    `settle(n)` charges n instead of the estimate (0, an answer without usage, keeps the
    estimate). `settle(None, delivered)`, a call that ended without an answer, refunds the
    estimate only when nothing reached the caller (`delivered` characters, 0); a stream the
    caller left or the upstream broke after some chunks keeps it and is charged the delivered
    text on top. Also frees the call's stream slot. Idempotent."""

    __slots__ = ("_caller", "_estimate", "_lease", "_limiter")

    def __init__(
        self, limiter: Limiter | None, caller: Caller | None, estimate: int, lease: str = ""
    ) -> None:
        self._limiter, self._caller, self._estimate, self._lease = (
            limiter,
            caller,
            estimate,
            lease,
        )

    def settle(self, used: int | None, delivered: int = 0) -> None:
        limiter, caller = self._limiter, self._caller
        if limiter is None or caller is None:
            return
        self._limiter = None
        store = limiter.store
        if self._lease:
            store.release(caller.id, self._lease)
        tpm = caller.tokens_per_minute
        if used is not None:
            charged = used or self._estimate
        elif delivered:
            charged = self._estimate + delivered_tokens(delivered)
        else:
            charged = 0
        if tpm and charged != self._estimate:
            store.adjust(caller.id, tpm, charged - self._estimate)


NO_LIMITS = Ticket(None, None, 0)  # for a call no limit applies to


class Limiter:
    """Admission by each key's limits, in one `take` of the store. When the store cannot be
    asked, `fail_open` admits the call (it is counted and logged as LimiterUnavailable either
    way); closed refuses it with LimitsUnavailable (UNAVAILABLE)."""

    def __init__(self, store: Store, *, fail_open: bool = True, listeners: Listeners = ()) -> None:
        self.store = store
        self.fail_open = fail_open
        self.listeners = listeners

    def _refuse(self, caller: Caller, limit: str, wait: float, why: str = "") -> RateLimited:
        emit(self.listeners, RateLimitHit(caller.id, limit))
        return RateLimited(caller.id, limit, wait, why)

    async def admit(self, caller: Caller, request: AnyRequest, stream: bool) -> Ticket:
        """A ticket to settle when the call ends (NO_LIMITS when the key has none); raises
        RateLimited or LimitsUnavailable."""
        rpm, tpm, streams = (
            caller.requests_per_minute,
            caller.tokens_per_minute,
            caller.max_concurrent_streams if stream else None,
        )
        if not (rpm or tpm or streams):
            return NO_LIMITS
        tokens = estimate_tokens(request) if tpm else 0
        lease = uuid.uuid4().hex if streams else ""
        ask = Ask(caller.id, rpm, tpm, tokens, streams, lease)
        try:
            refused = await self.store.take(ask)
        except StoreUnavailable as exc:
            emit(self.listeners, LimiterUnavailable(self.store.name, self.fail_open, str(exc)))
            if not self.fail_open:
                raise LimitsUnavailable(self.store.name) from None
            return Ticket(self, caller, 0)  # admitted unchecked: nothing was taken
        if refused is not None:
            limit, wait = refused
            why = f"{streams} in flight" if limit == STREAMS else ""
            raise self._refuse(caller, limit, wait, why)
        return Ticket(self, caller, tokens, lease)

    def streams_in_flight(self, client: str) -> int:
        """The key's streams in flight, as the store counts them."""
        return self.store.streams_in_flight(client)
