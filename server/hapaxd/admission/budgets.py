"""Budgets: caps on what a key or a team spends, in money or tokens, per UTC calendar window
(day; week, from Monday; month) or in total.

A call is admitted only if its worst case fits every budget it falls under, counting what was
spent and what calls in flight have reserved: `Budgets.reserve` checks and reserves in one step,
with no await between, so concurrent calls cannot together pass a budget (50 calls at once
against a budget that fits 10 admit 10). When the call ends its `Hold` is settled: the
reservation is replaced by what the call really cost (nothing when no provider answered). A
call that spans a window's end is counted in the window it was admitted in.

The spent amounts live in one `BudgetBook` per gateway, which outlives reloads (a reload that
lowers a budget applies from the next call) and is seeded at start from the usage ledger's
daily rollups (so a restart does not reset spend; what the ledger had not written at a `kill -9`
is lost with it, at most about a second's calls). One gateway process per book: budgets shared
by several replicas are not built yet. Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
from collections.abc import Callable
from decimal import Decimal

from hapaxd.admission.keys import Caller
from hapaxd.config import BudgetsSettings
from hapaxd.core.errors import BudgetExceeded

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
        start, days = today, 1
    elif window == "week":
        start, days = today - datetime.timedelta(days=today.weekday()), 7
    else:
        start = today.replace(day=1)
        days = calendar.monthrange(today.year, today.month)[1]
    end = datetime.datetime.combine(
        start + datetime.timedelta(days=days), datetime.time(), datetime.UTC
    )
    return start.isoformat(), end.timestamp()


class BudgetBook:
    """Spent and reserved amounts by (budget name, window start). Counted in the budget's unit
    (nanos or tokens); a budget renamed starts afresh."""

    def __init__(self) -> None:
        self.spent: dict[tuple[str, str], int] = {}
        self.reserved: dict[tuple[str, str], int] = {}

    def seed(self, name: str, window: str, amount: int) -> None:
        """What the ledger says was spent (at start)."""
        self.spent[(name, window)] = self.spent.get((name, window), 0) + amount


@dataclasses.dataclass(slots=True)
class Hold:
    """One call's reservations; `settle` exactly once, when the call ends."""

    book: BudgetBook
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
        for budget, window, reserved in self.entries:
            slot = (budget.name, window)
            self.book.reserved[slot] -= reserved
            used = tokens if budget.tokens is not None else (cost_nanos or 0)
            self.book.spent[slot] = self.book.spent.get(slot, 0) + used

    def settle_delivered(self, completion: int) -> None:
        """A call that ended without its usage (a stream cut off or left): charged its prompt's
        estimate and the `completion` tokens it delivered, at the dearest price; nothing when it
        delivered nothing."""
        if not completion or self.worst is None:
            self.settle(0, 0)
            return
        self.settle(self.worst(self.prompt, completion), self.prompt + completion)


NO_HOLD = Hold(BudgetBook(), [], settled=True)


class Budgets:
    """The budgets of one generation over the gateway's book."""

    def __init__(
        self,
        settings: BudgetsSettings,
        book: BudgetBook,
        currency: str,
        clock: Callable[[], float],
    ) -> None:
        self.book = book
        self.currency = currency
        self.default_max_tokens = settings.default_max_tokens
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

    def reserve(
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
        planned = []
        for budget in covering:
            if budget.money_nanos is not None:
                cost = worst(prompt_tokens, output) if cost is None else cost
                need = cost or 0  # an unpriced model's money is not known: nothing to reserve
            else:
                need = tokens
            window, ends = window_of(budget.window, now)
            slot = (budget.name, window)
            used = self.book.spent.get(slot, 0) + self.book.reserved.get(slot, 0)
            if used + need > budget.amount:
                raise BudgetExceeded(
                    budget.name,
                    caller.id,
                    self._describe(budget, used),
                    None if ends is None else max(0.0, ends - now),
                )
            planned.append((budget, window, need))
        for budget, window, need in planned:
            slot = (budget.name, window)
            self.book.reserved[slot] = self.book.reserved.get(slot, 0) + need
        return Hold(self.book, planned, prompt=prompt_tokens, worst=worst)

    def _describe(self, budget: Budget, used: int) -> str:
        if budget.money_nanos is not None:
            cap, spent = Decimal(budget.amount) / NANOS, Decimal(used) / NANOS
            amounts = f"{spent:f} of {cap:f} {self.currency}"
        else:
            amounts = f"{used} of {budget.amount} tokens"
        period = "in total" if budget.window == "total" else f"this {budget.window} (UTC)"
        return f"budget {budget.name} would be exceeded: {amounts} spent or reserved {period}"

    def status(self) -> list[tuple[Budget, str, int, int]]:
        """(budget, window, spent, reserved) of each budget's current window."""
        now = self._clock()
        found = []
        for budget in self.limits:
            window, _ = window_of(budget.window, now)
            slot = (budget.name, window)
            found.append(
                (budget, window, self.book.spent.get(slot, 0), self.book.reserved.get(slot, 0))
            )
        return found

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
        budgets.book.seed(budget.name, window, cost if budget.money_nanos is not None else tokens)
