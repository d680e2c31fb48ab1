"""What N workers share and what each keeps to itself, as `hapaxd check-config` says it (README
"Running in production"). Exact across workers only through Redis: a key's rate limits and
stream cap (`rate_limit.backend: redis`), budgets (`budgets.backend: redis`) and the response
cache (`cache.backend: redis`). Each worker keeps its own deduplication (identical calls in
flight together share one upstream call only within a worker), its own cap on calls in flight
(`server.max_in_flight`), its own provider breakers and health checks, and its own semantic
index. The usage ledger is one database that every worker writes. Plain Python."""

from __future__ import annotations

from hapaxd.config import Settings


def notes(settings: Settings, workers: int) -> list[str]:
    """One line per setting whose meaning changes with `workers` processes (none for one)."""
    if workers <= 1:
        return []
    lines = [f"workers: {workers} processes share the ports"]
    limited = any(
        k.requests_per_minute or k.tokens_per_minute or k.max_concurrent_streams
        for k in settings.auth.keys
    )
    if settings.auth.enabled and limited and settings.rate_limit.backend == "local":
        lines.append(
            f"workers: rate_limit.backend is local: each worker counts a key's limits on its "
            f"own, so a key may get up to {workers}x its requests, tokens and streams; "
            "set rate_limit.backend: redis for limits that hold across workers"
        )
    if settings.budgets.limits and settings.budgets.backend == "local":
        lines.append(
            f"workers: budgets.backend is local: each worker reserves against the budget on "
            f"its own, so up to {workers}x a budget may be spent; set budgets.backend: redis"
        )
    if settings.cache.models and settings.cache.backend == "local":
        lines.append(
            "workers: cache.backend is local: each worker keeps its own entries (a miss on one "
            "is not a hit on another); set cache.backend: redis to share them"
        )
    lines.append(
        "workers: each worker deduplicates, sheds past server.max_in_flight "
        f"({settings.server.max_in_flight}), and runs breakers and health checks on its own"
    )
    if settings.ledger.enabled and settings.ledger.backend == "sqlite":
        lines.append("workers: every worker writes the one SQLite ledger (WAL); each its own spool")
    return lines
