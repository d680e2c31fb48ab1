"""The energy table on its own: which figure a model gets, what the config may say, a call's
joules, and the shipped size classes."""

from __future__ import annotations

import pytest

from hapaxd.core.types import Usage
from hapaxd.costs import EnergyFigure, EnergyTable, PriceTable
from hapaxd.costs.energy import default_energy


def figure(prompt: float, completion: float | None = None) -> EnergyFigure:
    return EnergyFigure(prompt, prompt if completion is None else completion)


def test_the_local_provider_type_takes_no_energy_whatever_the_model() -> None:
    t = EnergyTable({"*": figure(1.0)})
    for model in ("local", "gpt-4o", "never-heard-of-it"):
        local = t.lookup("local", "local", model)
        assert local is not None and EnergyTable.joules(local, Usage(10**6, 10**6)) == 0.0
    assert t.lookup("openai", "local", "gpt-4o") == figure(1.0)  # the type decides, not the name
    assert EnergyTable.load(defaults=False).lookup("local", "local", "x") is not None


def test_provider_qualified_beats_exact_beats_the_longest_glob() -> None:
    t = EnergyTable(
        {
            "llama3.1:8b": figure(1),
            "gpu-box/llama3.1:8b": figure(2),
            "llama3.1:*": figure(3),
            "llama3.1:8b-*": figure(4),
        }
    )
    assert t.lookup("ollama", "gpu-box", "llama3.1:8b") == figure(2)
    assert t.lookup("ollama", "laptop", "llama3.1:8b") == figure(1)
    assert t.lookup("ollama", "laptop", "llama3.1:8b-instruct-q4_0") == figure(4)
    assert t.lookup("ollama", "laptop", "llama3.1:70b") == figure(3)
    assert t.lookup("ollama", "laptop", "qwen3") is None


def test_a_config_entry_replaces_the_default_whole_and_bad_ones_are_refused() -> None:
    mine = {"joules_per_prompt_token": 0.5, "joules_per_completion_token": 2}
    t = EnergyTable.load({"gpt-4o": mine, "ollama/*": mine})
    assert t.lookup("openai", "openai", "gpt-4o") == EnergyFigure(0.5, 2.0, "config")
    assert t.lookup("ollama", "ollama", "anything:1b") == EnergyFigure(0.5, 2.0, "config")
    assert t.lookup("openai", "openai", "gpt-4o-mini") == EnergyTable.load().lookup(
        "openai", "openai", "gpt-4o-mini"
    )
    assert set(EnergyTable.load({"x": mine}, defaults=False).entries) == {"x"}
    for bad, message in (
        ({**mine, "watts": 3}, "'m': unknown field.*watts"),
        ({"joules_per_prompt_token": 1}, "'m': joules_per_completion_token missing"),
        ({**mine, "joules_per_prompt_token": -1}, "'m':.*at least 0"),
        ({**mine, "joules_per_prompt_token": float("inf")}, "'m':.*at least 0"),
        ({**mine, "joules_per_prompt_token": "lots"}, "'m':"),
    ):
        with pytest.raises(ValueError, match=message):
            EnergyTable.load({"m": bad}, defaults=False)


def test_joules_are_tokens_times_the_figure() -> None:
    f = EnergyFigure(0.5, 2.0)
    # cached prompt tokens count as prompt tokens; reasoning tokens are part of completion's
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_prompt_tokens=400)
    assert EnergyTable.joules(f, usage) == pytest.approx(1000 * 0.5 + 200 * 2.0)
    assert EnergyTable.joules(f, Usage(completion_tokens=10, reasoning_tokens=8)) == 20.0
    assert EnergyTable.joules(f, Usage(prompt_tokens=64)) == 32.0  # an embedding call
    assert EnergyTable.joules(f, Usage()) == 0.0


def test_the_shipped_figures_load_with_a_source_each() -> None:
    entries = EnergyTable.load().entries
    assert len(entries) > 50
    for key, f in entries.items():
        assert "Epoch AI method" in f.source, key
        assert 0 <= f.joules_per_prompt_token <= f.joules_per_completion_token or (
            f.joules_per_completion_token == 0  # embedding models generate nothing
        ), key


def test_bigger_classes_take_more_per_token_and_a_prompt_token_less_than_an_output_one() -> None:
    t = EnergyTable.load()
    ladder = [
        t.lookup("ollama", "ollama", "llama3.1:8b"),
        t.lookup("openai", "openai", "gpt-4o-mini"),
        t.lookup("ollama", "ollama", "qwen2.5:32b"),
        t.lookup("ollama", "ollama", "llama3.3:70b"),
        t.lookup("openai", "openai", "gpt-4o"),
        t.lookup("anthropic", "anthropic", "claude-opus-4-1-20250805"),
    ]
    assert all(f is not None for f in ladder)
    outputs = [f.joules_per_completion_token for f in ladder if f is not None]
    assert outputs == sorted(outputs) and len(set(outputs)) == len(outputs)
    for f in ladder:
        assert f is not None and f.joules_per_prompt_token < f.joules_per_completion_token


@pytest.mark.parametrize(
    ("model", "completion"),
    [
        ("llama3.1", 0.17),  # Ollama's default tag of llama3.1 is the 8B
        ("llama3.1:70b-instruct-q4_K_M", 1.5),
        ("qwen3:30b", 0.17),  # mixture of experts, 3B active
        ("gemma2:27b", 0.65),
        ("gemma2:2b", 0.17),
        ("deepseek-r1:70b", 1.5),
        ("deepseek-r1:7b", 0.17),
    ],
)
def test_ollama_models_get_the_class_of_their_size(model: str, completion: float) -> None:
    f = EnergyTable.load().lookup("ollama", "ollama", model)
    assert f is not None and f.joules_per_completion_token == completion


def test_an_unknown_size_has_no_figure_rather_than_a_neighbours() -> None:
    t = EnergyTable.load()
    assert t.lookup("ollama", "ollama", "llama3.1:405b") is None
    assert t.lookup("openai", "openai", "gpt-4o-mini-search-preview") is None


def test_embedding_models_take_energy_for_their_input_only() -> None:
    t = EnergyTable.load()
    for model in ("text-embedding-3-small", "nomic-embed-text:latest"):
        f = t.lookup("openai", "p", model)
        assert f is not None and f.joules_per_completion_token == 0
        assert EnergyTable.joules(f, Usage(prompt_tokens=1000)) == pytest.approx(10.0)


def test_every_model_the_shipped_prices_name_has_an_energy_figure() -> None:
    energy = EnergyTable.load()
    named = [k for k in PriceTable.load().entries if not set(k) & set("*?[")]
    assert named
    for model in named:
        assert energy.lookup("openai", "p", model) is not None, model
    assert len(default_energy()) == len(energy.entries)
