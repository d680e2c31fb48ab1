"""Which Store holds the rate-limit buckets, by `rate_limit.backend`: this process's own
(admission/limits.py LocalStore) or a Redis shared by every replica (admission/redis_store.py,
imported only when configured). A reload keeps the running store (and so every bucket's level
and every stream's slot) unless the backend or its connection changed (`same_store`)."""

from __future__ import annotations

from hapaxd.admission.limits import LocalStore, Store
from hapaxd.config import RateLimitSettings

# What a Redis store is built from; the rest (on_store_error) is the limiter's, not the store's.
REDIS_FIELDS = ("redis_url", "redis_password", "redis_timeout", "key_prefix")


def build_store(settings: RateLimitSettings) -> Store:
    if settings.backend == "redis":
        from hapaxd.admission.redis_store import RedisStore

        return RedisStore(settings)
    return LocalStore()


def same_store(old: RateLimitSettings, new: RateLimitSettings) -> bool:
    """Whether `new` would build the store `old` built (so the running one is kept): the same
    backend, and for Redis the same connection and keys."""
    if old.backend != new.backend:
        return False
    return old.backend != "redis" or all(getattr(old, f) == getattr(new, f) for f in REDIS_FIELDS)
