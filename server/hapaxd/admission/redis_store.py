"""Rate-limit buckets in Redis, shared by every replica: one server-side script per admission
(EVALSHA, one round trip) refills and checks both of a key's buckets and takes from them only
when both have room, atomically, on Redis's own clock (so replicas' clocks do not matter).

A key's buckets are two hashes, `{prefix}{<key id>}:rpm` and `...:tpm` (one hash slot, for
Redis Cluster), each expiring once it would be full again, so idle keys cost no memory. After a
failed round trip Redis is not asked again for `DOWN_FOR` seconds: admissions meanwhile get
StoreUnavailable at once instead of each waiting out the timeout. Admissions that arrive while
one is out go together as one pipeline when it returns (`_ask`).

The corrections after each call (`adjust`: the reported usage against the estimate) ride along
with the key's next admission, so a busy key costs one round trip per call; what a key still owes
after FLUSH_AFTER seconds without a call is sent on its own. The script charges it before any
check, so it counts whatever the admission's verdict; a correction whose round trip failed is
kept and sent again (erring toward the limit: a timed-out round trip that did reach Redis may
then count it twice).

A key's streams in flight are a sorted set `...:streams` of leases, shared by every replica:
the admission script drops expired leases, refuses when the set is at the cap, and adds this
stream's lease, expiring in LEASE seconds; the process renews its leases every RENEW_EVERY
seconds while their streams run and removes each when its stream ends. A replica that dies
stops renewing, so its slots free themselves within LEASE.

Uses redis-py's asyncio client (`redis.asyncio`); no grpc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from hapaxd.admission.limits import REQUESTS, STREAMS, TOKENS, Ask, StoreUnavailable
from hapaxd.config import RateLimitSettings, RedisConnection

log = logging.getLogger("hapaxd.admission")

DOWN_FOR = 1.0  # seconds Redis is not asked after a failed round trip
LEASE = 60.0  # a stream's slot expires unless renewed (a replica that died frees its slots)
RENEW_EVERY = 20.0  # seconds between renewals of this process's leases
FLUSH_AFTER = 1.0  # seconds a key's owed correction waits for its next call

# KEYS: rpm bucket, tpm bucket, streams set. ARGV: rpm, tpm (0: no such limit), tokens, tokens
# owed from earlier calls' corrections (charged to the tpm bucket before any check, so whatever
# the verdict, a refusal at the streams cap included),
# the streams cap (0: not a stream, or no cap), this stream's lease id and how long it holds.
# Returns nil when admitted, else {which limit (1 rpm, 2 tpm, 3 streams), seconds to wait}, as
# text (a Lua number in a reply becomes an integer).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function load(key, cap)
  if cap <= 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'stamp', 'cap')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil or tonumber(v[3]) ~= cap then level, stamp = cap, now end
  local rate = cap / 60
  if now > stamp then level = math.min(cap, level + (now - stamp) * rate) end
  return {level, rate}
end
local function store(key, cap, b, level)
  redis.call('HSET', key, 'level', tostring(level), 'stamp', tostring(now), 'cap', cap)
  redis.call('EXPIRE', key, math.ceil((cap - level) / b[2]) + 1)
end
local rpm, tpm, tokens, owed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local streams, lease, hold = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local r, k = load(KEYS[1], rpm), load(KEYS[2], tpm)
if k and owed ~= 0 then
  k[1] = math.min(tpm, k[1] - owed)
  store(KEYS[2], tpm, k, k[1])
end
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= streams then return {'3', '1'} end
end
if r then
  local need = math.min(1, rpm) - r[1]
  if need > 0 then return {'1', tostring(need / r[2])} end
end
if k then
  local need = math.min(tokens, tpm) - k[1]
  if need > 0 then return {'2', tostring(need / k[2])} end
end
if r then store(KEYS[1], rpm, r, r[1] - 1) end
if k then store(KEYS[2], tpm, k, k[1] - tokens) end
if streams > 0 then
  redis.call('ZADD', KEYS[3], now + hold, lease)
  redis.call('EXPIRE', KEYS[3], math.ceil(hold) + 1)
end
return false
"""
_LIMITS = {"1": REQUESTS, "2": TOKENS, "3": STREAMS}

# KEYS: streams set. ARGV: lease seconds, then the leases to renew.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return false
"""


def connect(settings: RedisConnection, *, decode_responses: bool = True) -> redis.Redis:
    """A client for the Redis a section names (rate limits, budgets, the response cache). The
    round trip's deadline is the asyncio.timeout each store puts around it: redis-py's own
    socket_timeout wraps every read in another wait_for (measured: ~10 us a call)."""
    return redis.Redis.from_url(
        settings.redis_url,
        password=settings.redis_password.get_secret_value() or None,
        socket_connect_timeout=settings.redis_timeout,
        decode_responses=decode_responses,
    )


class RedisStore:
    name = "redis"

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = settings.redis_timeout
        self._client = connect(settings)
        self._prefix = settings.key_prefix
        self._take = self._client.register_script(_TAKE)
        self._clock = clock
        self._down_until = 0.0
        self._owed: dict[str, tuple[int, int]] = {}  # key id -> (its tpm, tokens owed)
        self._held: dict[str, set[str]] = {}  # key id -> leases of this process's streams
        self._renew = self._client.register_script(_RENEW)
        self._loops: dict[str, asyncio.Task[None]] = {}  # the flusher and the renewer
        self._tasks: set[asyncio.Task[None]] = set()  # releases on their way
        self._sending = False  # an admission round trip is out
        self._waiting: list[tuple[list[str], list[int | float | str], asyncio.Future[Any]]] = []

    def _keys(self, client: str) -> list[str]:
        base = f"{self._prefix}{{{client}}}"
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:streams"]

    async def take(self, ask: Ask) -> tuple[str, float] | None:
        if self._clock() < self._down_until:
            raise StoreUnavailable("not asked: unreachable moments ago")
        client = ask.client
        owed = self._owed.pop(client, (0, 0))[1] if ask.tpm else 0
        args: list[int | float | str] = [
            ask.rpm or 0,
            ask.tpm or 0,
            ask.tokens,
            owed,
            ask.streams or 0,
            ask.lease,
            LEASE,
        ]
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._ask(self._keys(client), args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = self._clock() + DOWN_FOR
            if owed:
                self.adjust(client, ask.tpm or 0, owed)  # kept until a round trip takes it
            raise StoreUnavailable(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
        if not found:
            if ask.streams:
                self._held.setdefault(client, set()).add(ask.lease)
                self._background("renewer", self._renew_leases)
            return None
        which, wait = found
        return _LIMITS[str(which)], float(wait)

    async def _ask(self, keys: list[str], args: list[int | float | str]) -> Any:
        """The admission script's answer. While a round trip is out, admissions wait together and
        go as one pipeline when it returns: one round trip each when calls are few, fewer (and
        less CPU each) when many arrive at once."""
        if not self._sending:
            self._sending = True
            try:
                return await self._take(keys=keys, args=args)
            finally:
                self._sending = False
                if self._waiting:
                    self._spawn(self._send_waiting())
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, answer))
        return await answer

    async def _send_waiting(self) -> None:
        """Send the admissions that waited as one pipeline, and again while more arrive."""
        while self._waiting and not self._sending:
            batch, self._waiting = self._waiting, []
            batch = [item for item in batch if not item[2].done()]  # timed-out waiters left
            if not batch:
                continue
            self._sending = True
            try:
                answers = await self._pipeline(batch)
            except (RedisError, OSError) as exc:
                answers = [exc] * len(batch)
            finally:
                self._sending = False
            for (_, _, answer), found in zip(batch, answers, strict=True):
                if not answer.done():
                    if isinstance(found, Exception):
                        answer.set_exception(found)
                    else:
                        answer.set_result(found)

    async def _pipeline(
        self, batch: list[tuple[list[str], list[int | float | str], Any]]
    ) -> list[Any]:
        answers = await self._evalshas(batch)
        if any(isinstance(a, NoScriptError) for a in answers):  # Redis restarted or was flushed
            await self._client.script_load(_TAKE)
            answers = await self._evalshas(batch)
        return answers

    async def _evalshas(
        self, batch: list[tuple[list[str], list[int | float | str], Any]]
    ) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._take.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    def release(self, client: str, lease: str) -> None:
        held = self._held.get(client)
        if held is None or lease not in held:
            return  # admitted unchecked (fail open): no slot was taken
        held.discard(lease)
        if not held:
            del self._held[client]
        self._spawn(self._send(self._client.zrem(self._keys(client)[2], lease), "release"))

    def streams_in_flight(self, client: str) -> int:
        """This process's streams of the key (the shared count is the ZSET's size)."""
        return len(self._held.get(client, ()))

    async def _renew_leases(self) -> None:
        while self._held:
            await asyncio.sleep(RENEW_EVERY)
            for client, leases in list(self._held.items()):
                if leases:
                    keys = self._keys(client)[2:]
                    await self._send(self._renew(keys=keys, args=[LEASE, *leases]), "renewal")

    async def _send(self, command: Any, what: str) -> bool:
        """Whether the command went through (a failure is logged at debug, not raised)."""
        try:
            async with asyncio.timeout(self._timeout):
                await command
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("rate-limit %s not sent: %r", what, exc)
            return False
        return True

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _background(self, name: str, loop: Any) -> None:
        running = self._loops.get(name)
        if running is None or running.done():
            self._loops[name] = asyncio.get_running_loop().create_task(loop())

    def adjust(self, client: str, tpm: int, tokens: int) -> None:
        _, owed = self._owed.get(client, (tpm, 0))
        self._owed[client] = (tpm, owed + tokens)
        self._background("flusher", self._flush_later)

    async def _flush_later(self) -> None:
        """Send what keys still owe after FLUSH_AFTER seconds (their next call did not)."""
        while self._owed:
            await asyncio.sleep(FLUSH_AFTER)
            await self.flush()

    async def flush(self) -> None:
        """Send what each key owes; what cannot be sent now (Redis down) is kept for later."""
        owed, self._owed = self._owed, {}
        for client, (tpm, tokens) in owed.items():
            if not tokens:
                continue
            # The admission script asked for nothing but the owed tokens: it charges them.
            args: list[int | float | str] = [0, tpm, 0, tokens, 0, "", LEASE]
            if self._clock() < self._down_until or not await self._send(
                self._take(keys=self._keys(client), args=args), "correction"
            ):
                _, later = self._owed.get(client, (tpm, 0))
                self._owed[client] = (tpm, later + tokens)

    async def aclose(self) -> None:
        for loop in self._loops.values():
            loop.cancel()
        await self.flush()
        for client, leases in list(self._held.items()):
            if leases:
                await self._send(self._client.zrem(self._keys(client)[2], *leases), "release")
        self._held.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
