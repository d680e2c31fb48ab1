"""Budgets in Redis, shared by every replica (`budgets.backend: redis`): one server-side script
per admission (EVALSHA, one round trip) checks every budget the call falls under and reserves
its worst case in each only when all of them have room, atomically; so replicas together cannot
pass a budget any more than one process can.

A budget's window is a hash `{prefix}{budgets}:<name>:<window start>` holding `spent`,
`reserved` and each hold's reservation (`h:<hold id>`), and a sorted set `...:holds` of the
holds by when they lapse. Every budget key carries the hash tag `{budgets}`, so all of them
share one Redis Cluster slot and one script can reserve a key's and its team's budgets together.
A window's keys expire a week after the window ends; a total budget's never do.

Settling (the reservation replaced by what the call used) never waits: it is queued and sent
in the background, together with whatever else is queued; one that cannot be sent (Redis down)
is kept and sent again later, and on close. A settle sent again (its round trip timed out after
reaching Redis) changes nothing the second time; only that of a call admitted unchecked (fail
open) is then counted twice, erring toward the limit as rate-limit corrections do.

A reservation whose round trip ended without its answer (timed out, or the caller left while it
was out) may have landed all the same: it is let go by a settle of nothing, which releases it if
it is there and does nothing if it is not (`settle` of a call admitted unchecked, fail open,
then charges what it used).

A hold lapses LEASE seconds after it was made: a replica that died mid-call leaves its
reservations behind, and the next admission that finds them lapsed counts them as spent (the
worst case the call could have cost) and marks them (`l:<hold id>`). A call that outlives its
lease is charged the same way, and its settle then corrects the spent amount by the difference;
so the figure is exact once every call has settled.

A window that Redis does not have yet (the first call in it, or a Redis that lost its data) is
seeded from the usage ledger before the call is admitted: `seeder(budget, window start)` gives
what the ledger holds for it (HSETNX: replicas that seed it together agree on the first).
Uses redis-py's asyncio client; no grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from hapaxd.admission.budgets import Budget, window_end
from hapaxd.admission.limits import StoreUnavailable
from hapaxd.admission.redis_store import connect
from hapaxd.config import BudgetsSettings

log = logging.getLogger("hapaxd.admission")

LEASE = 900.0  # seconds a hold reserves before it lapses into spent (its replica died)
KEPT_AFTER = 7 * 86400  # seconds a window's keys outlive the window
DOWN_FOR = 1.0  # seconds Redis is not asked after a failed round trip
RESEND_AFTER = 1.0  # seconds between attempts to send settles Redis could not take
MAX_PENDING = 100_000  # settles kept while Redis is down; past it the oldest are dropped, logged
SEED_TRIES = 3

# KEYS: per budget, its hash and its holds. ARGV: the hold id, its lease, then per budget: its
# cap, this call's need, when its keys expire (0: never). Returns nil when reserved, else
# {'over', index (1-based), spent + reserved} or {'seed', index} (the window has no `spent` yet),
# as text.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, lease = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('HEXISTS', h, 'spent') == 0 then return {'seed', tostring(i)} end
  local lapsed = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, gone in ipairs(lapsed) do
    local amount = redis.call('HGET', h, 'h:' .. gone)
    if amount then
      redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
      redis.call('HINCRBY', h, 'spent', amount)
      redis.call('HDEL', h, 'h:' .. gone)
      redis.call('HSET', h, 'l:' .. gone, amount)
    end
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
  local v = redis.call('HMGET', h, 'spent', 'reserved')
  local used = tonumber(v[1]) + tonumber(v[2] or '0')
  if used + tonumber(ARGV[3 * i + 1]) > tonumber(ARGV[3 * i]) then
    return {'over', tostring(i), tostring(used)}
  end
end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local need, at = ARGV[3 * i + 1], tonumber(ARGV[3 * i + 2])
  redis.call('HINCRBY', h, 'reserved', need)
  redis.call('HSET', h, 'h:' .. id, need)
  redis.call('ZADD', z, now + lease, id)
  if at > 0 then
    redis.call('EXPIREAT', h, at)
    redis.call('EXPIREAT', z, at)
  end
end
return false
"""

# KEYS: per budget, its hash and its holds. ARGV: the hold id, then per budget: what was
# reserved, what was used. A hold still there: its reservation replaced by the use. A hold that
# lapsed into spent (`l:<id>`): spent corrected by the difference. Neither: a call admitted
# unchecked (reserved 0: its use is charged) or a settle sent again (nothing). A window Redis
# lost meanwhile is left alone (it is seeded from the ledger later).
_SETTLE = """
local id = ARGV[1]
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local reserved, used = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if redis.call('HEXISTS', h, 'spent') == 1 then
    local held = redis.call('HGET', h, 'h:' .. id)
    local lapsed = redis.call('HGET', h, 'l:' .. id)
    if held then
      redis.call('HDEL', h, 'h:' .. id)
      redis.call('ZREM', z, id)
      redis.call('HINCRBY', h, 'reserved', -tonumber(held))
      redis.call('HINCRBY', h, 'spent', used)
    elseif lapsed then
      redis.call('HDEL', h, 'l:' .. id)
      redis.call('HINCRBY', h, 'spent', used - tonumber(lapsed))
    elseif reserved == 0 then
      redis.call('HINCRBY', h, 'spent', used)
    end
  end
end
return false
"""

# KEYS: a budget's hash. ARGV: what the ledger says was spent, when the key expires (0: never).
_SEED = """
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 and tonumber(ARGV[2]) > 0 then
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return false
"""

Seeder = Callable[[Budget, str], Awaitable[int]]
Settle = tuple[list[str], list[int | str]]


async def _nothing_spent(budget: Budget, window: str) -> int:
    return 0


class RedisBudgets:
    name = "redis"

    def __init__(
        self,
        settings: BudgetsSettings,
        seeder: Seeder | None = None,
        *,
        lease: float = LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = settings.redis_timeout
        self._client = connect(settings)
        self._prefix = settings.key_prefix
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)
        self._seed = self._client.register_script(_SEED)
        self._seeder = seeder or _nothing_spent
        self._lease = lease
        self._clock = clock
        self._down_until = 0.0
        self._pending: list[Settle] = []  # settles not sent yet
        self._sender: asyncio.Task[None] | None = None

    def _hash(self, budget: Budget, window: str) -> str:
        return f"{self._prefix}{{budgets}}:{budget.name}:{window or 'total'}"

    def _keys(self, slots: Sequence[tuple[Budget, str]]) -> list[str]:
        keys = []
        for budget, window in slots:
            h = self._hash(budget, window)
            keys += [h, h + ":holds"]
        return keys

    @staticmethod
    def _expiry(ends: float | None) -> int:
        return 0 if ends is None else int(ends) + KEPT_AFTER

    async def reserve(
        self, hold: str, wants: Sequence[tuple[Budget, str, float | None, int]]
    ) -> tuple[int, int] | None:
        keys = self._keys([(b, w) for b, w, _, _ in wants])
        args: list[int | float | str] = [hold, self._lease]
        for budget, _, ends, need in wants:
            args += [budget.amount, need, self._expiry(ends)]
        sent = False
        try:
            for _ in range(SEED_TRIES):
                sent = sent or self._clock() >= self._down_until
                found = await self._ask(self._reserve, keys, args)
                if not found:
                    return None
                if found[0] == "over":
                    return int(found[1]) - 1, int(found[2])
                budget, window, ends, _ = wants[int(found[1]) - 1]
                await self._seed_window(budget, window, ends)
        except (StoreUnavailable, asyncio.CancelledError):
            if sent:  # the reservation may have landed (a timeout, a caller gone): let it go
                self.settle(hold, [(b, w, 0, 0) for b, w, _, _ in wants])
            raise
        raise StoreUnavailable("a budget's window could not be seeded")

    async def _seed_window(self, budget: Budget, window: str, ends: float | None) -> None:
        try:
            spent = await self._seeder(budget, window)
        except Exception as exc:  # the ledger could not be asked: nothing safe to admit on
            raise StoreUnavailable(f"the ledger to seed it from: {exc!r}") from None
        await self._ask(self._seed, [self._hash(budget, window)], [spent, self._expiry(ends)])

    async def _ask(self, script: Any, keys: list[str], args: list[int | float | str]) -> Any:
        if self._clock() < self._down_until:
            raise StoreUnavailable("not asked: unreachable moments ago")
        try:
            async with asyncio.timeout(self._timeout):
                return await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = self._clock() + DOWN_FOR
            raise StoreUnavailable(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None

    def settle(self, hold: str, entries: Sequence[tuple[Budget, str, int, int]]) -> None:
        args: list[int | str] = [hold]
        for _, _, reserved, used in entries:
            args += [reserved, used]
        self._pending.append((self._keys([(b, w) for b, w, _, _ in entries]), args))
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            log.error("budgets: %d settles dropped: Redis has been unreachable too long", dropped)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())

    async def _send_pending(self) -> None:
        """Send what is queued, in one pipeline per round; while Redis cannot take it, try
        again every RESEND_AFTER seconds."""
        while self._pending:
            if not await self.flush():
                await asyncio.sleep(RESEND_AFTER)

    async def flush(self) -> bool:
        """Send every queued settle; False (and kept) when Redis could not take them."""
        batch, self._pending = self._pending, []
        if not batch:
            return True
        try:
            async with asyncio.timeout(self._timeout * 4):
                answers = await self._pipeline(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            answers = [exc] * len(batch)
        failed = [item for item, a in zip(batch, answers, strict=True) if isinstance(a, Exception)]
        if failed:
            log.debug("budgets: %d settles not sent yet: %r", len(failed), answers[0])
            self._pending[:0] = failed
            return False
        return True

    async def _pipeline(self, batch: list[Settle]) -> list[Any]:
        answers = await self._settles(batch)
        if any(isinstance(a, NoScriptError) for a in answers):  # Redis restarted or was flushed
            await self._client.script_load(_SETTLE)
            answers = await self._settles(batch)
        return answers

    async def _settles(self, batch: list[Settle]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in batch:
            pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def status(self, slots: Sequence[tuple[Budget, str]]) -> list[tuple[int, int]]:
        found = []
        for budget, window in slots:
            h = self._hash(budget, window)
            for _ in range(SEED_TRIES):
                try:
                    async with asyncio.timeout(self._timeout):
                        spent, reserved = await self._client.hmget(h, ["spent", "reserved"])
                except (RedisError, OSError, TimeoutError) as exc:
                    raise StoreUnavailable(type(exc).__name__) from None
                if spent is not None:
                    break
                await self._seed_window(budget, window, window_end(budget.window, window))
            found.append((int(spent or 0), int(reserved or 0)))
        return found

    def seed(self, budget: Budget, window: str, amount: int) -> None:
        """Nothing at start: a window is seeded from the ledger when Redis first lacks it."""

    async def drain(self) -> None:
        sender = self._sender
        if sender is not None and not sender.done():  # it runs until nothing is pending
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout * 8 + RESEND_AFTER):
                    await asyncio.shield(sender)

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self._pending and not await self.flush():
            log.error(
                "budgets: %d settles could not reach Redis before stopping; their spend is in "
                "the usage ledger",
                len(self._pending),
            )
        await self._client.aclose()
