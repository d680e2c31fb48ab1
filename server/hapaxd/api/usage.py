"""UsageService: usage totals from the ledger's daily rollups (ledger/). The admission wrapper
(api/admission.py) has checked the key before this runs: an admin key sees every key's usage,
any other key only its own (the key filter is set to it, whatever the request says); with auth
off every caller sees everything. Transport layer: request -> store query -> response.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import grpc

from hapax.v1 import completion_service_pb2 as completion_pb
from hapax.v1 import usage_service_pb2 as pb
from hapax.v1 import usage_service_pb2_grpc as pb_grpc
from hapaxd.admission.budgets import Budgets
from hapaxd.admission.keys import Caller
from hapaxd.admission.limits import StoreUnavailable
from hapaxd.api.call import abort, record_of
from hapaxd.core.errors import (
    BudgetsUnavailable,
    FieldViolation,
    GatewayError,
    InvalidRequest,
    LedgerOff,
    LedgerUnavailable,
)
from hapaxd.ledger import Ledger

GROUPS = {
    pb.USAGE_GROUP_DAY: "day",
    pb.USAGE_GROUP_KEY: "key_id",
    pb.USAGE_GROUP_TEAM: "team",
    pb.USAGE_GROUP_MODEL: "model",
    pb.USAGE_GROUP_PROVIDER: "provider",
}
DEFAULT_DAYS = 30


def _day(value: str, field: str) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest([FieldViolation(field, "not a day: YYYY-MM-DD")]) from None


def days(request: pb.GetUsageRequest, today: datetime.date) -> tuple[str, str]:
    """The request's range of UTC days (start, end), defaults filled; InvalidRequest if bad."""
    end = _day(request.end_day, "end_day") or today
    start = _day(request.start_day, "start_day") or end - datetime.timedelta(days=DEFAULT_DAYS)
    if start > end:
        raise InvalidRequest([FieldViolation("start_day", "after end_day")])
    return start.isoformat(), end.isoformat()


def _row(total: dict[str, Any], currency: str) -> pb.UsageRow:
    row = pb.UsageRow(
        day=total.get("day") or "",
        key_id=total.get("key_id") or "",
        team=total.get("team") or "",
        model=total.get("model") or "",
        provider=total.get("provider") or "",
        calls=total["calls"],
        errors=total["errors"],
        prompt_tokens=total["prompt_tokens"],
        completion_tokens=total["completion_tokens"],
        cached_prompt_tokens=total["cached_prompt_tokens"],
        reasoning_tokens=total["reasoning_tokens"],
        unpriced_calls=total["unpriced_calls"],
        energy_joules=total["energy_joules"] or 0.0,
        shared_calls=total["shared_calls"],
        cache_hits=total["cache_hits"],
        saved_tokens=total["saved_tokens"],
    )
    row.cost.CopyFrom(completion_pb.Cost(currency=currency, nanos=total["cost_nanos"] or 0))
    row.saved_cost.CopyFrom(
        completion_pb.Cost(currency=currency, nanos=total["saved_cost_nanos"] or 0)
    )
    return row


async def budget_statuses(budgets: Budgets, caller: Caller | None) -> list[pb.BudgetStatus]:
    """The budgets `caller` may see (all for an admin key or with auth off), in their current
    windows. BudgetsUnavailable when their store cannot be asked."""
    found = []
    try:
        statuses = await budgets.status()
    except StoreUnavailable:
        raise BudgetsUnavailable(budgets.store.name) from None
    for budget, window, spent, reserved in statuses:
        if caller is not None and not caller.admin and not budget.covers(caller):
            continue
        found.append(
            pb.BudgetStatus(
                name=budget.name,
                key_id=budget.key or "",
                team=budget.team or "",
                window=budget.window,
                window_start=window,
                unit=budget.unit(budgets.currency),
                limit=budget.amount,
                spent=spent,
                reserved=reserved,
                remaining=max(0, budget.amount - spent - reserved),
            )
        )
    return found


class UsageServicer(pb_grpc.UsageServiceServicer):
    def __init__(
        self, ledger: Ledger | None, currency: Callable[[], str], budgets: Callable[[], Budgets]
    ) -> None:
        self._ledger = ledger
        self._currency = currency
        self._budgets = budgets

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        record = record_of(context)
        try:
            if self._ledger is None:
                raise LedgerOff()
            start, end = days(request, datetime.datetime.now(datetime.UTC).date())
            key = record.key
            key_id = request.key_id or None
            if key is not None and not key.admin:
                key_id = key.id  # a key sees only its own usage
            group_by = [GROUPS[g] for g in request.group_by if g in GROUPS]
            await self._ledger.flush()  # what was answered before this call is counted
            try:
                totals = await asyncio.to_thread(
                    self._ledger.store.usage,
                    start,
                    end,
                    key_id=key_id,
                    team=request.team or None,
                    model=request.model or None,
                    provider=request.provider or None,
                    group_by=group_by,
                )
            except Exception as error:
                if not self._ledger.store.unavailable(error):  # a bug: INTERNAL, logged
                    await abort(context, record.failed(error), record)
                # The database down: its rows wait in the spool, the caller retries later.
                raise LedgerUnavailable(f"{type(error).__name__}: {error}") from None
            budgets = await budget_statuses(self._budgets(), record.key)
        except GatewayError as error:
            await abort(context, record.failed(error), record)
        currency = self._currency()
        return pb.GetUsageResponse(rows=[_row(t, currency) for t in totals], budgets=budgets)
