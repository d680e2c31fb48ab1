"""Rate-limit buckets in Redis, shared by every replica: one server-side script per admission
(EVALSHA, one round trip) refills and checks both of a key's buckets and takes from them only
when both have room, atomically, on Redis's own clock (so replicas' clocks do not matter).

A key's buckets are two hashes, `{prefix}{<key id>}:rpm` and `...:tpm` (one hash slot, for
Redis Cluster), each expiring once it would be full again, so idle keys cost no memory. After a
failed round trip Redis is not asked again for `DOWN_FOR` seconds: admissions meanwhile get
StoreUnavailable at once instead of each waiting out the timeout. Corrections after a call
(`adjust`) are sent in the background; one that cannot be sent is dropped.

Uses redis-py's asyncio client (`redis.asyncio`); no grpc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from hapaxd.admission.limits import REQUESTS, TOKENS, StoreUnavailable
from hapaxd.config import RateLimitSettings

log = logging.getLogger("hapaxd.admission")

DOWN_FOR = 1.0  # seconds Redis is not asked after a failed round trip

# KEYS: rpm bucket, tpm bucket. ARGV: rpm, tpm (0: no such limit), tokens.
# Returns nil when admitted, else {which limit (1 rpm, 2 tpm), seconds to wait}, as text (a Lua
# number in a reply becomes an integer).
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
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r, k = load(KEYS[1], rpm), load(KEYS[2], tpm)
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
return false
"""
_LIMITS = {"1": REQUESTS, "2": TOKENS}

# KEYS: tpm bucket. ARGV: tpm, tokens to charge (negative: refund).
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'stamp', 'cap')
local level, stamp = tonumber(v[1]), tonumber(v[2])
if level == nil or tonumber(v[3]) ~= cap then level, stamp = cap, now end
local rate = cap / 60
if now > stamp then level = math.min(cap, level + (now - stamp) * rate) end
level = math.min(cap, level - delta)
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(now), 'cap', cap)
redis.call('EXPIRE', KEYS[1], math.ceil((cap - level) / rate) + 1)
return false
"""


class RedisStore:
    name = "redis"

    def __init__(self, settings: RateLimitSettings, *, clock: Any = time.monotonic) -> None:
        password = settings.redis_password.get_secret_value() or None
        self._timeout = settings.redis_timeout
        self._client = redis.Redis.from_url(
            settings.redis_url,
            password=password,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            decode_responses=True,
        )
        self._prefix = settings.key_prefix
        self._take = self._client.register_script(_TAKE)
        self._adjust = self._client.register_script(_ADJUST)
        self._clock = clock
        self._down_until = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    def _keys(self, client: str) -> list[str]:
        base = f"{self._prefix}{{{client}}}"
        return [f"{base}:rpm", f"{base}:tpm"]

    async def take(
        self, client: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> tuple[str, float] | None:
        if self._clock() < self._down_until:
            raise StoreUnavailable("not asked: unreachable moments ago")
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._take(keys=self._keys(client), args=[rpm or 0, tpm or 0, tokens])
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = self._clock() + DOWN_FOR
            raise StoreUnavailable(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
        if not found:
            return None
        which, wait = found
        return _LIMITS[str(which)], float(wait)

    def adjust(self, client: str, tpm: int, tokens: int) -> None:
        if self._clock() < self._down_until:
            return
        task = asyncio.get_running_loop().create_task(self._send_adjust(client, tpm, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_adjust(self, client: str, tpm: int, tokens: int) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._adjust(keys=self._keys(client)[1:], args=[tpm, tokens])
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("rate-limit correction for %s dropped: %r", client, exc)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()
