"""What calls cost: money by a price table, energy by an estimate table, both keyed by model
("<provider>/<model>", the exact model, glob patterns longest first). Plain Python: imports
nothing of hapaxd but core.types, no grpc, no HTTP client.

    prices.py             Price (per 1M tokens), PriceTable, cost_nanos (a call's cost in
                          nano-units, rounded once), Charge (what one call cost), ModelTable
                          (the key rules and lookup cache both tables share)
    energy.py             EnergyFigure (joules per prompt and completion token), EnergyTable
                          (zero for the built-in local provider); the method of its defaults
    default_prices.yaml   vendors' list prices (USD), with their sources and the date read
    default_energy.yaml   energy per token by size class, the models of each, the arithmetic
"""

from hapaxd.costs.energy import EnergyFigure, EnergyTable
from hapaxd.costs.prices import Charge, ModelTable, Price, PriceTable, cost_nanos

__all__ = [
    "Charge",
    "EnergyFigure",
    "EnergyTable",
    "ModelTable",
    "Price",
    "PriceTable",
    "cost_nanos",
]
