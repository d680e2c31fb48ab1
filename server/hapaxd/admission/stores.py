"""Which Store holds the rate-limit buckets, by `rate_limit.backend`: this process's own
(admission/limits.py LocalStore) or a Redis shared by every replica (admission/redis_store.py,
imported only when configured)."""

from __future__ import annotations

from hapaxd.admission.limits import LocalStore, Store
from hapaxd.config import RateLimitSettings


def build_store(settings: RateLimitSettings) -> Store:
    if settings.backend == "redis":
        from hapaxd.admission.redis_store import RedisStore

        return RedisStore(settings)
    return LocalStore()
