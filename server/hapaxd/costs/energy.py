"""An estimate of the energy a call took: joules per prompt token and per completion token, by
model, times the call's tokens.

The table is keyed like the price table (prices.ModelTable: "<provider>/<model>", the exact
model, glob patterns longest first); the built-in provider type "local" always gets a zero
figure, as it does no model inference. The shipped figures are default_energy.yaml; the config's
`energy:` entries replace its entries of the same key whole.

Method of the shipped figures (default_energy.yaml shows the arithmetic): Epoch AI's estimate of
a GPT-4o query ("How much energy does ChatGPT use?", J. You, Epoch AI, February 2025, and its
spreadsheet), turned per token and applied to size classes. An output token takes
2 x (active parameters) FLOP on an H100 (989 TFLOP/s bf16) at 10% utilisation, drawing 1,275 W
per GPU x 0.7 (partial load) x 1.2 (PUE) = 1,071 W: 2.17e-11 J per active parameter, so 0.17 J
for an 8B model, 1.5 J for a 70B one, 2.2 J for a GPT-4o-class model (Epoch's 100B active). A
prompt token costs about 0.35 of an output token: prompt processing is compute-bound and runs at
far higher utilisation (Epoch's 10,000-token-input case as reported: about 2.5 Wh against
0.3 Wh). Checked against measurements: the ML.ENERGY Leaderboard v3.0 (Chung et al., December
2025) measured 0.12 J per token for Llama 3.1 8B on H100 (GPU only, batch 64); Google reported
0.24 Wh for the median Gemini Apps text prompt (August 2025); Jegham et al., "How Hungry is AI?"
(2025), about 0.42 Wh for a short GPT-4o query; the large class gives 0.39 Wh for 400 tokens in
and 500 out.

Uncertainty: within 3x either way for open-weight models served in a datacenter (their sizes are
known); hosted proprietary models' sizes and hardware are not published, so their class is a
judgment (from their price tier and the vendors' descriptions) and the figure may be off by more.
Single-user local serving (Ollama at batch 1) can take several times the per-token energy of
batched datacenter serving: the figures are then an underestimate. Cached prompt tokens are
counted as prompt tokens (an upper bound for them).

Plain Python: imports nothing of hapaxd but core.types (and the key rules of prices.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from hapaxd.core.types import Usage
from hapaxd.costs.prices import ModelTable

LOCAL_TYPE = "local"  # the built-in provider type: no model, no inference


@dataclasses.dataclass(frozen=True, slots=True)
class EnergyFigure:
    """Joules per prompt token and per completion token (reasoning included); `source`: where
    the figures come from ("config" for the config's own)."""

    joules_per_prompt_token: float
    joules_per_completion_token: float
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("joules_per_prompt_token", "joules_per_completion_token"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name}: a number is needed, not {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: a number of at least 0 is needed, not {value}")


LOCAL = EnergyFigure(0.0, 0.0, "the built-in local provider does no model inference")

FIGURE_FIELDS = ("joules_per_prompt_token", "joules_per_completion_token", "source")


def figure_entry(key: str, raw: Any, *, source: str = "") -> EnergyFigure:
    """One table entry (a mapping of FIGURE_FIELDS) as an EnergyFigure; `source` when it names
    none. A field missing or unknown is a ValueError naming the entry."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"energy {key!r}: a mapping of {', '.join(FIGURE_FIELDS)} is needed")
    unknown = sorted(str(k) for k in raw if k not in FIGURE_FIELDS)
    if unknown:
        raise ValueError(
            f"energy {key!r}: unknown field(s) {', '.join(unknown)}; "
            f"a figure has {', '.join(FIGURE_FIELDS)}"
        )
    missing = [k for k in FIGURE_FIELDS[:2] if raw.get(k) is None]
    if missing:
        raise ValueError(f"energy {key!r}: {' and '.join(missing)} missing")
    try:
        return EnergyFigure(
            float(raw["joules_per_prompt_token"]),
            float(raw["joules_per_completion_token"]),
            str(raw.get("source") or source),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"energy {key!r}: {error}") from None


CLASS_FIELDS = (*FIGURE_FIELDS, "models")


@functools.cache
def default_energy() -> Mapping[str, EnergyFigure]:
    """The shipped figures, default_energy.yaml, read once: size classes, each a figure and the
    model keys it applies to."""
    text = resources.files(__package__).joinpath("default_energy.yaml").read_text("utf-8")
    raw = yaml.safe_load(text) or {}
    classes = raw.get("classes") if isinstance(raw, Mapping) else None
    if not isinstance(classes, Mapping) or set(raw) != {"classes"}:
        raise ValueError("default_energy.yaml: a mapping `classes` (and nothing else) is needed")
    entries: dict[str, EnergyFigure] = {}
    for name, spec in classes.items():
        if not isinstance(spec, Mapping) or set(spec) - set(CLASS_FIELDS):
            raise ValueError(f"energy class {name!r}: only {', '.join(CLASS_FIELDS)}")
        figure = figure_entry(str(name), {k: v for k, v in spec.items() if k != "models"})
        for key in spec.get("models") or ():
            if key in entries:
                raise ValueError(f"energy class {name!r}: {key!r} is in two classes")
            entries[str(key)] = figure
    return types.MappingProxyType(entries)


class EnergyTable:
    """Energy figures by model (the key rules of prices.ModelTable)."""

    __slots__ = ("_table",)

    def __init__(self, entries: Mapping[str, EnergyFigure]) -> None:
        self._table = ModelTable(entries)

    @property
    def entries(self) -> Mapping[str, EnergyFigure]:
        return self._table.entries

    def lookup(self, provider_type: str, provider: str, model: str) -> EnergyFigure | None:
        """The figure for `model` as served by the provider named `provider`, of type
        `provider_type`; None: no figure is known."""
        if provider_type == LOCAL_TYPE:
            return LOCAL
        return self._table.lookup(provider, model)

    @staticmethod
    def joules(figure: EnergyFigure, usage: Usage) -> float:
        """The energy of a call's tokens: every prompt token (cached ones too) and every
        completion token (reasoning ones too) at the figure's rate."""
        return (
            max(usage.prompt_tokens, 0) * figure.joules_per_prompt_token
            + max(usage.completion_tokens, 0) * figure.joules_per_completion_token
        )

    @classmethod
    def load(
        cls, overrides: Mapping[str, Mapping[str, Any]] | None = None, *, defaults: bool = True
    ) -> EnergyTable:
        """The shipped figures (unless `defaults` is off) under the config's entries, each of
        which replaces a shipped entry of the same key whole (its source "config" unless it
        names one)."""
        entries = dict(default_energy()) if defaults else {}
        for key, raw in (overrides or {}).items():
            entries[key] = figure_entry(key, raw, source="config")
        return cls(entries)
