"""The price table on its own: which entry a model gets, what the config may say, and a call's
cost in nano-units, exact to one rounding."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from importlib import resources

import pytest

from hapaxd.core.types import Usage
from hapaxd.costs import Charge, Price, PriceTable, cost_nanos
from hapaxd.costs import prices as prices_module


def price(amount: str) -> Price:
    return Price.of(amount, amount, source=amount)


def table(**entries: str) -> PriceTable:
    return PriceTable({key.replace("__", "/"): price(v) for key, v in entries.items()})


# --- which entry --------------------------------------------------------------------------------


def test_provider_qualified_beats_exact_beats_glob() -> None:
    t = PriceTable(
        {"gpt-4o": price("2"), "azure/gpt-4o": price("3"), "gpt-4o*": price("4"), "*": price("5")}
    )
    assert t.lookup("azure", "gpt-4o") == price("3")
    assert t.lookup("openai", "gpt-4o") == price("2")
    assert t.lookup("openai", "gpt-4o-2024-08-06") == price("4")
    assert t.lookup("openai", "anything") == price("5")


def test_the_longest_glob_wins_whatever_the_order_given() -> None:
    t = PriceTable({"gpt-*": price("1"), "gpt-4.1-*": price("2"), "gpt-4.1-mini-*": price("3")})
    assert t.lookup("p", "gpt-4.1-mini-2025-04-14") == price("3")
    assert t.lookup("p", "gpt-4.1-2025-04-14") == price("2")
    assert t.lookup("p", "gpt-5") == price("1")


def test_a_glob_can_name_the_provider() -> None:
    t = PriceTable({"cheap/*": price("0.01"), "gpt-4o": price("2")})
    assert t.lookup("cheap", "gpt-4o") == price("2")  # an exact model name beats any glob
    assert t.lookup("cheap", "llama3") == price("0.01")
    assert t.lookup("other", "llama3") is None


def test_globs_match_the_whole_name_and_case() -> None:
    t = PriceTable({"gpt-4o-????-??-??": price("2"), "claude-3-haiku-*": price("1")})
    assert t.lookup("p", "gpt-4o-2024-11-20") == price("2")
    assert t.lookup("p", "gpt-4o-mini-2024-07-18") is None  # not a dated gpt-4o snapshot
    assert t.lookup("p", "x-claude-3-haiku-1") is None
    assert t.lookup("p", "Claude-3-haiku-1") is None


def test_an_unpriced_model_is_none_and_the_answer_is_remembered_within_a_bound() -> None:
    t = PriceTable({"gpt-*": price("1")})
    assert t.lookup("p", "llama3") is None
    for n in range(prices_module.CACHE_LIMIT + 10):
        assert t.lookup("p", f"gpt-{n}") == price("1")
    assert 0 < len(t._table._cache) <= prices_module.CACHE_LIMIT
    assert t.lookup("p", "llama3") is None


# --- what the config may say --------------------------------------------------------------------


def test_a_config_entry_replaces_the_default_whole() -> None:
    default = PriceTable.load().lookup("openai", "gpt-4o-mini")
    assert default is not None and default.cached_prompt == Decimal("0.075")
    t = PriceTable.load({"gpt-4o-mini": {"prompt": 1, "completion": "2"}})
    mine = t.lookup("openai", "gpt-4o-mini")
    assert mine == Price.of(1, 2, source="config")
    assert mine is not None and mine.cached_prompt == Decimal(1)  # not the default's 0.075
    assert t.lookup("openai", "gpt-4o") == PriceTable.load().lookup("openai", "gpt-4o")


def test_without_defaults_only_the_config_prices() -> None:
    t = PriceTable.load({"mine": {"prompt": 0.5, "completion": 1.5}}, defaults=False)
    assert set(t.entries) == {"mine"}
    assert t.lookup("openai", "gpt-4o") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"prompt": 1, "completion": 2, "cached": 1}, "'gpt-x': unknown field.*cached"),
        ({"prompt": 1}, "'gpt-x': completion missing"),
        ({"prompt": -1, "completion": 2}, "'gpt-x': prompt"),
        ({"prompt": "one", "completion": 2}, "'gpt-x': prompt"),
        ({"prompt": "NaN", "completion": 2}, "'gpt-x': prompt"),
        ({"prompt": True, "completion": 2}, "'gpt-x': prompt"),
        ("2.5", "'gpt-x': a mapping"),
    ],
)
def test_a_bad_config_entry_is_refused_by_name(entry: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.load({"gpt-x": entry}, defaults=False)  # type: ignore[dict-item]


def test_price_of_reads_floats_by_their_text_and_defaults_to_the_prompt_price() -> None:
    p = Price.of(0.15, 0.6)
    assert (p.prompt, p.completion) == (Decimal("0.15"), Decimal("0.6"))
    assert p.cached_prompt == p.embedding == Decimal("0.15")
    assert Price.of("1", 2, cached_prompt=0.5, embedding=Decimal("0.02")).embedding == Decimal(
        "0.02"
    )
    with pytest.raises(ValueError):
        Price.of(1, 2, cached_prompt=-0.1)


def test_the_default_table_is_in_usd() -> None:
    with pytest.raises(ValueError, match="USD"):
        PriceTable.load(currency="EUR")
    assert PriceTable.load({"m": {"prompt": 1, "completion": 1}}, defaults=False, currency="EUR")


# --- what a call costs --------------------------------------------------------------------------


def test_cost_is_exact_in_nanos() -> None:
    assert cost_nanos(Price.of("0.15", "0.6"), Usage(prompt_tokens=1_000_001)) == 150_000_150
    assert cost_nanos(Price.of("0.15", "0.6"), Usage(completion_tokens=3)) == 1_800
    assert cost_nanos(Price.of("75", "150"), Usage(10**12, 10**12)) == 225 * 10**15


def test_cached_prompt_tokens_are_at_the_cached_price() -> None:
    p = Price.of("2.5", "10", cached_prompt="1.25")
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_prompt_tokens=400)
    assert cost_nanos(p, usage) == 600 * 2500 + 400 * 1250 + 200 * 10_000 == 4_000_000
    # cached tokens are part of the prompt: never more than it, never negative
    assert cost_nanos(p, Usage(prompt_tokens=10, cached_prompt_tokens=99)) == 10 * 1250
    assert cost_nanos(p, Usage(prompt_tokens=10, cached_prompt_tokens=-5)) == 10 * 2500


def test_reasoning_tokens_are_completion_tokens_not_counted_twice() -> None:
    p = Price.of("1", "8")
    assert cost_nanos(p, Usage(completion_tokens=100, reasoning_tokens=80)) == 100 * 8000


@pytest.mark.parametrize(
    ("amount", "tokens", "nanos"),
    [
        ("0.0005", 1, 0),  # 0.5 nano: to even, 0
        ("0.0005", 3, 2),  # 1.5: 2
        ("0.0005", 5, 2),  # 2.5: 2
        ("0.0015", 1, 2),  # 1.5: 2
        ("0.0004", 1, 0),
        ("0.0006", 1, 1),
        ("0.0000001", 10_000, 1),  # 1 nano exactly, from seven decimal places
    ],
)
def test_a_fractional_nano_is_rounded_half_to_even(amount: str, tokens: int, nanos: int) -> None:
    assert cost_nanos(Price.of(amount, amount), Usage(prompt_tokens=tokens)) == nanos


@pytest.mark.parametrize("amount", ["0.123456789", "3", "0.075", "1E+2", "12.3456789012345678901"])
def test_cost_matches_exact_decimal_arithmetic(amount: str) -> None:
    p = Price.of(amount, "7.77", cached_prompt="0.0101")
    for usage in (Usage(7, 11, 3), Usage(123_457, 98_765, 1_001), Usage(10**9 + 1, 3, 10**8)):
        with localcontext() as exact:
            exact.prec = 100
            amount_nanos = (
                (usage.prompt_tokens - usage.cached_prompt_tokens) * Decimal(amount)
                + usage.cached_prompt_tokens * Decimal("0.0101")
                + usage.completion_tokens * Decimal("7.77")
            ) * 1000
            expected = int(amount_nanos.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        assert cost_nanos(p, usage) == expected, usage


def test_an_embedding_call_is_priced_at_the_embedding_price() -> None:
    p = Price.of("2.5", "10", cached_prompt="1.25", embedding="0.02")
    usage = Usage(prompt_tokens=1000, completion_tokens=50, cached_prompt_tokens=500)
    assert cost_nanos(p, usage, embedding=True) == 1000 * 20
    assert cost_nanos(p, usage) != 1000 * 20


def test_a_charge_gives_its_cost_in_currency_units_or_none() -> None:
    assert Charge(4_500_000, "USD", 900.0).cost == Decimal("0.0045")
    assert Charge(1, "USD", None).cost == Decimal("1E-9")
    assert Charge(None, "USD", None).cost is None
    assert Charge(0, "USD", None).cost == 0


# --- the shipped table --------------------------------------------------------------------------


def test_the_shipped_table_loads_and_every_entry_has_a_public_source() -> None:
    entries = PriceTable.load().entries
    assert len(entries) > 20
    for key, p in entries.items():
        assert p.source.startswith("https://"), key
        assert min(p.prompt, p.completion, p.cached_prompt, p.embedding) >= 0, key
        assert p.cached_prompt <= p.prompt, key
    text = resources.files("hapaxd.costs").joinpath("default_prices.yaml").read_text("utf-8")
    assert re.search(r"Read on \d{4}-\d{2}-\d{2}", text)


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "cached", "completion"),
    [
        ("openai", "gpt-4o-mini", "0.15", "0.075", "0.6"),
        ("azure", "gpt-4o-2024-11-20", "2.5", "1.25", "10"),
        ("openai", "gpt-4o-2024-05-13", "5", "5", "15"),
        ("openai", "o4-mini-2025-04-16", "1.1", "0.275", "4.4"),
        ("anthropic", "claude-haiku-4-5", "1", "0.1", "5"),
        ("anthropic", "claude-opus-4-20250514", "15", "1.5", "75"),
        ("anthropic", "claude-opus-4-5-20251101", "5", "0.5", "25"),
        ("anthropic", "claude-3-5-haiku-latest", "0.8", "0.08", "4"),
    ],
)
def test_the_shipped_table_prices_common_models(
    provider: str, model: str, prompt: str, cached: str, completion: str
) -> None:
    p = PriceTable.load().lookup(provider, model)
    assert p is not None
    assert (p.prompt, p.cached_prompt, p.completion) == tuple(
        map(Decimal, (prompt, cached, completion))
    )


def test_the_shipped_table_prices_embeddings_and_leaves_self_hosted_models_unpriced() -> None:
    t = PriceTable.load()
    small = t.lookup("openai", "text-embedding-3-small")
    assert small is not None and small.embedding == Decimal("0.02")
    assert cost_nanos(small, Usage(prompt_tokens=1_000_000), embedding=True) == 20_000_000
    for model in ("llama3.1:8b", "llama3.2", "qwen2.5:7b", "mistral", "gpt-4o-mini-search-preview"):
        assert t.lookup("ollama", model) is None, model
