"""Which store holds the rate-limit buckets (`rate_limit.backend`) and the budgets' amounts
(`budgets.backend`): this process's own (admission/limits.py LocalStore, admission/budgets.py
LocalBudgets) or a Redis shared by every replica (admission/redis_store.py,
admission/redis_budgets.py, imported only when configured). A reload keeps the running store
(every bucket's level, every stream's slot, every budget's spend) unless the backend or its
connection changed (`same_store`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hapaxd.admission.budgets import BudgetStore, LocalBudgets
from hapaxd.admission.limits import LocalStore, Store
from hapaxd.config import BudgetsSettings, RateLimitSettings, SharedStore

if TYPE_CHECKING:
    from hapaxd.admission.redis_budgets import Seeder

# What a Redis store is built from; the rest (on_store_error) is the limiter's, not the store's.
REDIS_FIELDS = ("redis_url", "redis_password", "redis_timeout", "key_prefix")


def build_store(settings: RateLimitSettings) -> Store:
    if settings.backend == "redis":
        from hapaxd.admission.redis_store import RedisStore

        return RedisStore(settings)
    return LocalStore()


def build_budget_store(settings: BudgetsSettings, seeder: Seeder | None = None) -> BudgetStore:
    """`seeder`: what the usage ledger holds for a budget's window (Redis asks it for a window
    it does not have yet); LocalBudgets is seeded at start instead."""
    if settings.backend == "redis":
        from hapaxd.admission.redis_budgets import RedisBudgets

        return RedisBudgets(settings, seeder)
    return LocalBudgets()


def same_store(old: SharedStore, new: SharedStore) -> bool:
    """Whether `new` would build the store `old` built (so the running one is kept): the same
    backend, and for Redis the same connection and keys."""
    if old.backend != new.backend:
        return False
    return old.backend != "redis" or all(getattr(old, f) == getattr(new, f) for f in REDIS_FIELDS)
