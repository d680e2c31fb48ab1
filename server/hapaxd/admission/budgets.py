"""Budgets: caps on what a key or a team spends, in money or tokens, per UTC calendar window
(day; week, from Monday; month) or in total.

A call is admitted only if its worst case fits every budget it falls under, counting what was
spent and what calls in flight have reserved: `Budgets.reserve` checks and reserves in one step,
with no await between, so concurrent calls cannot together pass a budget (50 calls at once
against a budget that fits 10 admit 10). When the call ends its `Hold` is settled: the
reservation is replaced by what the call really cost (nothing when no provider answered). A
call that spans a window's end is counted in the window it was admitted in.

The amounts live in a BudgetStore that outlives reloads (a reload that lowers a budget applies
from the next call): `LocalBudgets`, this process's (seeded at start from the usage ledger's
daily rollups, so a restart does not reset spend; what the ledger had not written at a `kill -9`
is lost with it, at most about a second's calls), or `budgets.backend: redis`
(admission/redis_budgets.py), which every replica shares. Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

from hapaxd.admission.keys import Caller
from hapaxd.admission.limits import StoreUnavailable
from hapaxd.config import BudgetsSettings
from hapaxd.core.errors import BudgetExceeded, BudgetsUnavailable
from hapaxd.core.events import BudgetStoreUnavailable, Listeners, emit

NANOS = 1_000_000_000
Window = str  # "day" | "week" | "month" | "total"
# (prompt tokens, completion tokens) -> the dearest cost in nanos among the providers that may
# serve the call (None: none of them has a price)
WorstCase = Callable[[int, int], int | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    name: str
    key: str | None  # a key id, or
    team: str | None  # a team (keys' owner)
    money_nanos: int | None  # a cap in nano-units of the currency, or
    tokens: int | None  # a cap in tokens
    window: Window

    def covers(self, caller: Caller) -> bool:
        return caller.id == self.key if self.key is not None else caller.team == self.team

    @property
    def amount(self) -> int:
        """The cap, in what this budget counts: nanos or tokens."""
        return self.money_nanos if self.money_nanos is not None else self.tokens or 0

    def unit(self, currency: str) -> str:
        return currency if self.money_nanos is not None else "tokens"


def window_of(window: Window, now: float) -> tuple[str, float | None]:
    """The window `now` falls in: its first day ("2026-12-01" for a month; "" for a total
    budget) and the unix time it ends (None: never)."""
    if window == "total":
        return "", None
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    if window == "day":
        start = today
    elif window == "week":
        start = today - datetime.timedelta(days=today.weekday())
    else:
        start = today.replace(day=1)
    return start.isoformat(), window_end(window, start.isoformat())


def window_end(window: Window, start: str) -> float | None:
    """The unix time the `window` that began on the day `start` ends (None: never)."""
    if window == "total":
        return None
    first = datetime.date.fromisoformat(start)
    if window == "day":
        days = 1
    elif window == "week":
        days = 7
    else:
        days = calendar.monthrange(first.year, first.month)[1]
    end = datetime.datetime.combine(
        first + datetime.timedelta(days=days), datetime.time(), datetime.UTC
    )
    return end.timestamp()


class BudgetStore(Protocol):
    """Where budgets' spent and reserved amounts live, by (budget name, window start), counted
    in the budget's unit (nanos or tokens); a budget renamed starts afresh. `LocalBudgets`
    (this process) or admission/redis_budgets.py (a Redis every replica shares)."""

    name: str

    async def reserve(
        self, hold: str, wants: Sequence[tuple[Budget, str, float | None, int]]
    ) -> tuple[int, int] | None:
        """Reserve each (budget, window, window's end, need) for `hold` when every one fits
        (spent + reserved + need <= cap): None. Else (the index of the first that does not,
        what it has spent or reserved), reserving nothing. One step: concurrent calls cannot
        together pass a budget. StoreUnavailable when it cannot be asked."""
        ...

    def settle(self, hold: str, entries: Sequence[tuple[Budget, str, int, int]]) -> None:
        """Replace each (budget, window, reserved, used) reservation of `hold` by what it used,
        without waiting (a store that cannot be reached now is told later)."""
        ...

    async def status(self, slots: Sequence[tuple[Budget, str]]) -> list[tuple[int, int]]:
        """(spent, reserved) of each (budget, window). StoreUnavailable when it cannot be
        asked."""
        ...

    def seed(self, budget: Budget, window: str, amount: int) -> None:
        """What the ledger says was spent in the window (at start)."""
        ...

    async def drain(self) -> None:
        """Until every settle so far has reached the store (or could not, the store down)."""
        ...

    async def aclose(self) -> None: ...


class LocalBudgets:
    """Budgets' amounts in this process: one gateway process per book."""

    name = "local"

    def __init__(self) -> None:
        self.spent: dict[tuple[str, str], int] = {}
        self.reserved: dict[tuple[str, str], int] = {}

    async def reserve(
        self, hold: str, wants: Sequence[tuple[Budget, str, float | None, int]]
    ) -> tuple[int, int] | None:
        spent, reserved = self.spent, self.reserved
        for i, (budget, window, _, need) in enumerate(wants):
            slot = (budget.name, window)
            used = spent.get(slot, 0) + reserved.get(slot, 0)
            if used + need > budget.amount:
                return i, used
        for budget, window, _, need in wants:
            slot = (budget.name, window)
            reserved[slot] = reserved.get(slot, 0) + need
        return None

    def settle(self, hold: str, entries: Sequence[tuple[Budget, str, int, int]]) -> None:
        for budget, window, reserved, used in entries:
            slot = (budget.name, window)
            if reserved:
                self.reserved[slot] -= reserved
            self.spent[slot] = self.spent.get(slot, 0) + used

    async def status(self, slots: Sequence[tuple[Budget, str]]) -> list[tuple[int, int]]:
        return [
            (self.spent.get((b.name, w), 0), self.reserved.get((b.name, w), 0)) for b, w in slots
        ]

    def seed(self, budget: Budget, window: str, amount: int) -> None:
        slot = (budget.name, window)
        self.spent[slot] = self.spent.get(slot, 0) + amount

    async def drain(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


@dataclasses.dataclass(slots=True)
class Hold:
    """One call's reservations; `settle` exactly once, when the call ends."""

    store: BudgetStore | None
    id: str
    entries: list[tuple[Budget, str, int]]  # (budget, window, reserved amount)
    settled: bool = False
    prompt: int = 0  # the prompt's estimate it was reserved with
    worst: WorstCase | None = None  # its pricing at the dearest provider

    def settle(self, cost_nanos: int | None, tokens: int) -> None:
        """Replace the reservations by what the call cost (cost None: it had no price; its money
        is not known, so a money budget is charged nothing for it) and used."""
        if self.settled:
            return
        self.settled = True
        if self.store is None:
            return
        self.store.settle(
            self.id,
            [
                (b, w, reserved, tokens if b.tokens is not None else (cost_nanos or 0))
                for b, w, reserved in self.entries
            ],
        )

    def settle_delivered(self, completion: int) -> None:
        """A call that ended without its usage (a stream cut off or left): charged its prompt's
        estimate and the `completion` tokens it delivered, at the dearest price; nothing when it
        delivered nothing."""
        if not completion or self.worst is None:
            self.settle(0, 0)
            return
        self.settle(self.worst(self.prompt, completion), self.prompt + completion)


NO_HOLD = Hold(None, "", [], settled=True)


class Budgets:
    """The budgets of one generation over the gateway's store. When the store cannot be asked
    (Redis down), `fail_open` admits the call unchecked (its cost is charged once the store
    answers again); closed refuses it with BudgetsUnavailable. Either way it is counted and
    logged (BudgetStoreUnavailable)."""

    def __init__(
        self,
        settings: BudgetsSettings,
        store: BudgetStore,
        currency: str,
        clock: Callable[[], float],
        listeners: Listeners = (),
    ) -> None:
        self.store = store
        self.currency = currency
        self.default_max_tokens = settings.default_max_tokens
        self.fail_open = settings.on_store_error == "open"
        self.listeners = listeners
        self._clock = clock
        self.limits = [
            Budget(
                b.name,
                b.key,
                b.team,
                None if b.money is None else int(b.money * NANOS),
                b.tokens,
                b.window,
            )
            for b in settings.limits
        ]

    async def reserve(
        self, caller: Caller | None, prompt_tokens: int, max_tokens: int | None, worst: WorstCase
    ) -> Hold:
        """Reserve the call's worst case in every budget covering `caller`, or raise
        BudgetExceeded (nothing reserved) naming the first budget it does not fit."""
        if caller is None or not self.limits:
            return NO_HOLD
        covering = [b for b in self.limits if b.covers(caller)]
        if not covering:
            return NO_HOLD
        output = max_tokens or self.default_max_tokens
        tokens = prompt_tokens + output
        cost = None
        now = self._clock()
        wants = []
        for budget in covering:
            if budget.money_nanos is not None:
                cost = worst(prompt_tokens, output) if cost is None else cost
                need = cost or 0  # an unpriced model's money is not known: nothing to reserve
            else:
                need = tokens
            window, ends = window_of(budget.window, now)
            wants.append((budget, window, ends, need))
        hold = uuid.uuid4().hex
        try:
            refused = await self.store.reserve(hold, wants)
        except StoreUnavailable as exc:
            emit(self.listeners, BudgetStoreUnavailable(self.store.name, self.fail_open, str(exc)))
            if not self.fail_open:
                raise BudgetsUnavailable(self.store.name) from None
            # Admitted unchecked: nothing reserved, what it costs is charged all the same.
            unchecked = [(b, w, 0) for b, w, _, _ in wants]
            return Hold(self.store, hold, unchecked, prompt=prompt_tokens, worst=worst)
        if refused is not None:
            index, used = refused
            budget, _, ends, _ = wants[index]
            raise BudgetExceeded(
                budget.name,
                caller.id,
                self._describe(budget, used),
                None if ends is None else max(0.0, ends - now),
            )
        entries = [(b, w, need) for b, w, _, need in wants]
        return Hold(self.store, hold, entries, prompt=prompt_tokens, worst=worst)

    def _describe(self, budget: Budget, used: int) -> str:
        if budget.money_nanos is not None:
            cap, spent = Decimal(budget.amount) / NANOS, Decimal(used) / NANOS
            amounts = f"{spent:f} of {cap:f} {self.currency}"
        else:
            amounts = f"{used} of {budget.amount} tokens"
        period = "in total" if budget.window == "total" else f"this {budget.window} (UTC)"
        return f"budget {budget.name} would be exceeded: {amounts} spent or reserved {period}"

    async def status(self) -> list[tuple[Budget, str, int, int]]:
        """(budget, window, spent, reserved) of each budget's current window. StoreUnavailable
        when the store cannot be asked."""
        now = self._clock()
        slots = [(b, window_of(b.window, now)[0]) for b in self.limits]
        amounts = await self.store.status(slots) if slots else []
        return [
            (b, w, spent, reserved)
            for (b, w), (spent, reserved) in zip(slots, amounts, strict=True)
        ]

    def windows(self) -> list[tuple[Budget, str]]:
        """Each budget with the first day of its current window ("" for total), for seeding."""
        now = self._clock()
        return [(b, window_of(b.window, now)[0]) for b in self.limits]


def seed_from(
    budgets: Budgets, sums: Callable[[str, str | None, str | None], tuple[int, int]]
) -> None:
    """Seed the book from the ledger: `sums(start_day, key_id, team)` is (cost nanos, tokens)
    from that day to today."""
    for budget, window in budgets.windows():
        cost, tokens = sums(window or "1970-01-01", budget.key, budget.team)
        budgets.store.seed(budget, window, cost if budget.money_nanos is not None else tokens)
