"""LedgerRow: what the usage ledger keeps of one call, and its one-line JSON form for the spool
file (writer.py); UsageRow: one group's totals in an answer to a usage question. Plain Python:
no grpc, no HTTP, nothing else of hapaxd.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeAlias


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerRow:
    """One call, identified by its request id. Tokens of an answer shared with an identical call
    in flight (`shared`) belong to the call that asked the provider; the gateway rows them as 0.
    `cost_nanos` None is a call with no price: unpriced, never a cost of 0."""

    request_id: str
    started_at: float  # unix seconds
    duration_ms: float
    ttft_ms: float | None  # time to first token: streams only
    door: str  # "grpc" or "http"
    method: str  # "Complete", "StreamComplete", "Embed"
    key_id: str  # "" when auth is off
    team: str
    tags: Mapping[str, str]  # the caller's metadata tags
    model: str  # the logical model the caller asked for
    provider: str
    upstream_model: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int
    cost_nanos: int | None
    currency: str
    energy_joules: float | None
    code: str  # gRPC status code name, "OK" on success
    reason: str  # ErrorInfo reason, "" on success
    shared: bool  # answered by deduplication
    # The response cache: what it did ("" when the call does not use it; hit, semantic_hit,
    # miss, refresh, bypass) and, for a hit, what it saved: the original answer's cost (None:
    # unpriced) and tokens. A hit's own tokens and cost are 0: nothing is counted twice.
    cache: str = ""
    saved_cost_nanos: int | None = None
    saved_tokens: int = 0

    def to_json(self) -> str:
        """One line of JSON (no newline in it): every field, None as null."""
        fields: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        fields["tags"] = dict(self.tags)
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> LedgerRow:
        """The row `to_json` wrote. ValueError (json's or ours) for a line that is not one, such
        as a line cut short by a crash, or one missing a field."""
        fields = json.loads(line)
        if not isinstance(fields, dict) or not REQUIRED <= set(fields) <= set(FIELDS):
            raise ValueError("not a ledger row")
        for name in FLOATS:  # json writes 3.0 as 3.0, but a row built with an int says 3
            if fields[name] is not None:
                fields[name] = float(fields[name])
        tags = fields["tags"]
        if not isinstance(tags, dict):
            raise ValueError("a ledger row's tags are not an object")
        return cls(**fields)


# A usage question's answer, per group: the group's values (day, key_id, team, model, provider:
# those grouped by) and its sums (calls, errors, the tokens by kind, cost_nanos, unpriced_calls,
# energy_joules, shared_calls, and the response cache's cache_hits, saved_cost_nanos,
# saved_tokens).
UsageRow: TypeAlias = dict[str, str | int | float]

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LedgerRow))
# What a spooled line must have: a line written before the cache fields existed has none of them.
REQUIRED = frozenset(
    f.name for f in dataclasses.fields(LedgerRow) if f.default is dataclasses.MISSING
)
FLOATS = ("started_at", "duration_ms", "ttft_ms", "energy_joules")
