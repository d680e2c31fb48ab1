"""What a model's tokens cost, and what one call cost.

A Price is in units of the table's currency per 1,000,000 tokens. cost_nanos() turns a call's
Usage into nano-units of that currency (1e-9): each call's cost is rounded once to a nano-unit;
every sum of costs is then exact integer arithmetic. A model with no price has no cost (None),
never a cost of zero.

The tables are keyed by model (ModelTable, shared with energy.py): an exact upstream model name,
"<provider name>/<model>", or a glob pattern. The shipped table is default_prices.yaml; the
config's `prices:` entries replace its entries of the same key whole.

Plain Python: imports nothing of hapaxd but core.types.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
import types
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Generic, TypeVar

import yaml

from hapaxd.core.types import Usage

V = TypeVar("V")

CACHE_LIMIT = 4096  # lookups remembered per table; model names can come from callers
GLOB_CHARS = frozenset("*?[")
DEFAULT_CURRENCY = "USD"  # the currency of default_prices.yaml

Amount = Decimal | int | float | str


class ModelTable(Generic[V]):
    """Values keyed by model, found in one order: the exact key "<provider>/<model>", then the
    exact model name, then the glob patterns (fnmatch, case-sensitive; a key with `*`, `?` or `[`
    is a pattern), each tried against "<provider>/<model>" and against the model, the longest
    pattern first (the most specific; equal lengths alphabetically). Every answer, a miss too, is
    remembered per (provider, model), forgotten all at once when CACHE_LIMIT is reached."""

    __slots__ = ("_cache", "_exact", "_patterns", "entries")

    def __init__(self, entries: Mapping[str, V]) -> None:
        for key in entries:
            if not key:
                raise ValueError("an empty model key")
        self.entries: Mapping[str, V] = types.MappingProxyType(dict(entries))
        self._exact = {k: v for k, v in entries.items() if not GLOB_CHARS.intersection(k)}
        globs = sorted(
            (k for k in entries if GLOB_CHARS.intersection(k)), key=lambda k: (-len(k), k)
        )
        self._patterns: list[tuple[Callable[[str], object], V]] = [
            (re.compile(fnmatch.translate(k)).match, entries[k]) for k in globs
        ]
        self._cache: dict[tuple[str, str], V | None] = {}

    def lookup(self, provider: str, model: str) -> V | None:
        try:
            return self._cache[provider, model]
        except KeyError:
            pass
        found = self._find(provider, model)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[provider, model] = found
        return found

    def _find(self, provider: str, model: str) -> V | None:
        qualified = f"{provider}/{model}"
        if qualified in self._exact:
            return self._exact[qualified]
        if model in self._exact:
            return self._exact[model]
        for match, value in self._patterns:
            if match(qualified) or match(model):
                return value
        return None


def _decimal(name: str, value: Amount) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise TypeError(f"{name}: a number is needed, not {type(value).__name__}")
    try:
        # A float through its shortest repr, so 0.15 is 0.15 and not 0.1499999999999999944...
        amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name}: {value!r} is not a number") from None
    return amount


def _scaled(amount: Decimal, places: int) -> int:
    """`amount` x 10**places as an integer, exactly (integer arithmetic, no context rounding):
    `places` is at least the number of its decimal places."""
    _, digits, exponent = amount.as_tuple()
    scale: int = 10 ** (int(exponent) + places)
    return int("".join(map(str, digits))) * scale


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """A model's price, each in currency units per 1,000,000 tokens: `cached_prompt` for the
    prompt tokens an upstream's prompt cache served, `embedding` for an embedding call's tokens.
    `source`: where the figures come from ("config" for the config's own)."""

    prompt: Decimal
    completion: Decimal
    cached_prompt: Decimal
    embedding: Decimal
    source: str = ""
    # The four prices as integers over one power of ten, for cost_nanos (set in __post_init__).
    _units: tuple[int, int, int, int] = dataclasses.field(
        init=False, repr=False, compare=False, default=(0, 0, 0, 0)
    )
    _places: int = dataclasses.field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        amounts = (self.prompt, self.completion, self.cached_prompt, self.embedding)
        names = ("prompt", "completion", "cached_prompt", "embedding")
        for name, amount in zip(names, amounts, strict=True):
            if not isinstance(amount, Decimal):
                raise TypeError(f"{name}: a Decimal is needed (Price.of converts)")
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"{name}: a price is a number of at least 0, not {amount}")
        places = max(0, *(-int(a.as_tuple().exponent) for a in amounts))
        prompt, completion, cached, embedding = (_scaled(a, places) for a in amounts)
        object.__setattr__(self, "_units", (prompt, completion, cached, embedding))
        object.__setattr__(self, "_places", places)

    @classmethod
    def of(
        cls,
        prompt: Amount,
        completion: Amount,
        cached_prompt: Amount | None = None,
        embedding: Amount | None = None,
        source: str = "",
    ) -> Price:
        """A Price from numbers or their text (a float by its repr); `cached_prompt` and
        `embedding` default to `prompt`. A negative price is a ValueError."""
        base = _decimal("prompt", prompt)
        return cls(
            base,
            _decimal("completion", completion),
            base if cached_prompt is None else _decimal("cached_prompt", cached_prompt),
            base if embedding is None else _decimal("embedding", embedding),
            source,
        )


def cost_nanos(price: Price, usage: Usage, *, embedding: bool = False) -> int:
    """One call's cost in nano-units of the currency, exact until one rounding (half to even) to a
    whole nano-unit: for a completion, the uncached prompt tokens at `prompt`, the cached ones at
    `cached_prompt` and the completion tokens (reasoning included) at `completion`; for an
    embedding call, the prompt tokens at `embedding`. Each call's cost is rounded once to a
    nano-unit; every sum of costs is then exact integer arithmetic."""
    prompt_units, completion_units, cached_units, embedding_units = price._units
    prompt_tokens = max(usage.prompt_tokens, 0)
    if embedding:
        scaled = prompt_tokens * embedding_units
    else:
        cached = min(max(usage.cached_prompt_tokens, 0), prompt_tokens)
        scaled = (
            (prompt_tokens - cached) * prompt_units
            + cached * cached_units
            + max(usage.completion_tokens, 0) * completion_units
        )
    # price per 1e6 tokens x 1e9 nanos: 1000 nanos per token per unit of price, which is
    # `scaled` / 10**places units.
    if price._places <= 3:
        factor: int = 10 ** (3 - price._places)
        return scaled * factor
    divisor: int = 10 ** (price._places - 3)
    quotient, remainder = divmod(scaled, divisor)
    if 2 * remainder > divisor or (2 * remainder == divisor and quotient % 2):
        quotient += 1  # half to even
    return quotient


@dataclasses.dataclass(frozen=True, slots=True)
class Charge:
    """What one call cost: `cost_nanos` in nano-units of `currency` (None: the model has no
    price, never 0 for "unknown"), and the energy estimate in joules (None: no figure)."""

    cost_nanos: int | None
    currency: str
    energy_joules: float | None

    @property
    def cost(self) -> Decimal | None:
        """The cost in currency units, exactly (nine decimal places), or None."""
        return None if self.cost_nanos is None else Decimal(self.cost_nanos).scaleb(-9)


PRICE_FIELDS = ("prompt", "completion", "cached_prompt", "embedding", "source")


def price_entry(key: str, raw: Any, *, source: str = "") -> Price:
    """One table entry (a mapping of PRICE_FIELDS) as a Price; `source` when it names none. An
    embedding model's entry may give `embedding` alone (its completion price is then 0: an
    embedding call generates no tokens). Anything else missing or unknown is a ValueError naming
    the entry."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"price {key!r}: a mapping of {', '.join(PRICE_FIELDS)} is needed")
    unknown = sorted(str(k) for k in raw if k not in PRICE_FIELDS)
    if unknown:
        raise ValueError(
            f"price {key!r}: unknown field(s) {', '.join(unknown)}; "
            f"a price has {', '.join(PRICE_FIELDS)}"
        )
    fields = {k: v for k, v in raw.items() if v is not None}
    if "prompt" not in fields and "embedding" in fields:
        fields.setdefault("completion", 0)
        fields["prompt"] = fields["embedding"]
    missing = [k for k in ("prompt", "completion") if k not in fields]
    if missing:
        raise ValueError(f"price {key!r}: {' and '.join(missing)} missing")
    try:
        return Price.of(
            fields["prompt"],
            fields["completion"],
            fields.get("cached_prompt"),
            fields.get("embedding"),
            str(fields.get("source") or source),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"price {key!r}: {error}") from None


@functools.cache
def default_prices() -> Mapping[str, Price]:
    """The shipped table, default_prices.yaml (USD), read once."""
    text = resources.files(__package__).joinpath("default_prices.yaml").read_text("utf-8")
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, Mapping):
        raise ValueError("default_prices.yaml: a mapping of model keys is needed")
    return types.MappingProxyType({str(k): price_entry(str(k), v) for k, v in raw.items()})


class PriceTable:
    """Prices by model (the key rules of ModelTable) in one currency."""

    __slots__ = ("_table", "currency")

    def __init__(self, entries: Mapping[str, Price], currency: str = DEFAULT_CURRENCY) -> None:
        self.currency = currency
        self._table = ModelTable(entries)

    @property
    def entries(self) -> Mapping[str, Price]:
        return self._table.entries

    def lookup(self, provider: str, model: str) -> Price | None:
        """The price of `model` as served by the provider named `provider`; None: unpriced."""
        return self._table.lookup(provider, model)

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        defaults: bool = True,
        currency: str = DEFAULT_CURRENCY,
    ) -> PriceTable:
        """The shipped table (unless `defaults` is off) under the config's entries, each of which
        replaces a shipped entry of the same key whole (its source "config" unless it names
        one). The shipped table is in USD: with it, another currency is a ValueError."""
        if defaults and currency != DEFAULT_CURRENCY:
            raise ValueError(
                f"the default price table is in {DEFAULT_CURRENCY}, not {currency}: load it "
                "with defaults=False and price every model"
            )
        entries = dict(default_prices()) if defaults else {}
        for key, raw in (overrides or {}).items():
            entries[key] = price_entry(key, raw, source="config")
        return cls(entries, currency)
