"""What one call cost: its tokens at the price of the model that served it, and an estimate of
the energy spent on it (the tables are costs/prices.py and costs/energy.py). One Charges per
generation (calls/generation.py), so a reload's new prices apply from the next call.

A call is priced by the provider that answered and the upstream model it was asked for
(`Route`), not by the logical model: two providers of one logical model may charge differently.
An answer shared with an identical call in flight costs its joiner nothing: the call that made
the upstream call paid for it; nor does one from the response cache (the call that stored it
did). Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

from collections.abc import Iterable

from hapaxd.config import Settings
from hapaxd.core.types import Route, Usage
from hapaxd.costs import Charge, EnergyTable, PriceTable, cost_nanos


class Charges:
    def __init__(self, settings: Settings) -> None:
        prices, energy = settings.prices, settings.energy
        self.currency = prices.currency
        self.prices = PriceTable.load(
            {m: p.model_dump(exclude_none=True) for m, p in prices.models.items()},
            defaults=prices.defaults,
            currency=prices.currency,
        )
        self.energy = EnergyTable.load(
            {m: f.model_dump() for m, f in energy.models.items()}, defaults=energy.defaults
        )
        self._types = {p.name: p.type for p in settings.providers}
        self.shared = Charge(0, self.currency, 0.0)
        self.cached = self.shared  # an answer from the response cache costs nothing either

    def worst(self, targets: Iterable[tuple[str, str]], prompt: int, completion: int) -> int | None:
        """The dearest cost (nanos) of `prompt` and `completion` tokens among the (provider,
        upstream model) targets that may serve a call; None when none of them has a price."""
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
        costs = [
            cost_nanos(price, usage)
            for provider, model in targets
            if (price := self.prices.lookup(provider, model)) is not None
        ]
        return max(costs, default=None)

    def of(self, route: Route, usage: Usage, *, embedding: bool = False) -> Charge:
        """The charge of an answered call: its cost (None when the model has no price) and its
        energy (None when no figure is known)."""
        if route.shared:
            return self.shared
        provider, model = route.provider, route.upstream_model
        price = self.prices.lookup(provider, model)
        cost = None if price is None else cost_nanos(price, usage, embedding=embedding)
        figure = self.energy.lookup(self._types.get(provider, ""), provider, model)
        joules = None if figure is None else self.energy.joules(figure, usage)
        return Charge(cost, self.currency, joules)
