"""Which providers, in which order, serve a logical model: the route table.

Built once from the settings. A logical model's ranks come from its own `provider_preference`,
else the global one, else every provider in file order; an inner list is one rank, whose
providers the router spreads by weight. A provider serves a logical model it maps in `models`, or
any name through a "*" mapping ("*": "*" passes the name on; "*": "m" sends every name to m).
A request that needs capabilities (tools, images, structured output, streaming) is routed only
to the providers declared able for that model (`capabilities`, `model_capabilities`).
Plain Python.
"""

from __future__ import annotations

from collections.abc import Iterable

from hapaxd.config import ProviderSettings, Settings
from hapaxd.core.errors import CapabilityMissing, ModelNotFound
from hapaxd.core.types import Capability

Rank = list[tuple[str, str]]  # (provider name, upstream model), spread by weight
Needs = frozenset[Capability]
MAX_CACHED = 10_000  # logical names remembered; "*" routes make the name space open
NOTHING: Needs = frozenset()


def upstream_model(provider: ProviderSettings, logical: str) -> str | None:
    """The name `provider` knows the logical model by, or None when it does not serve it."""
    if logical in provider.models:
        return provider.models[logical]
    wildcard = provider.models.get("*")
    if wildcard is None:
        return None
    return logical if wildcard == "*" else wildcard


class RouteTable:
    def __init__(self, settings: Settings) -> None:
        self.default_model = settings.default_model
        self.default_embedding_model = settings.default_embedding_model or settings.default_model
        self._providers = list(settings.providers)
        self._global = settings.provider_preference
        self._own = {m: s.provider_preference for m, s in settings.models.items()}
        self._known = sorted(
            {m for p in self._providers for m in p.models if m != "*"}
            | set(settings.models)
            | {settings.default_model, self.default_embedding_model}
        )
        self._ranks: dict[str, list[Rank]] = {}
        self._able: dict[tuple[str, Needs], list[Rank]] = {}
        self._by_name = {p.name: p for p in self._providers}

    def logical_models(self) -> list[str]:
        """Every logical model named in the config (a "*" provider serves others too)."""
        return list(self._known)

    def listed_models(self) -> list[str]:
        """The named logical models, and "*" when some provider passes any other name on."""
        wildcard = ["*"] if any("*" in p.models for p in self._providers) else []
        return [*self._known, *wildcard]

    def preference(self, model: str) -> list[list[str]]:
        """Ranks of provider names for a logical model, best first, before asking who serves."""
        order = self._own.get(model) or self._global
        if order is None:
            return [[p.name] for p in self._providers]
        return [[entry] if isinstance(entry, str) else list(entry) for entry in order]

    def ranks(self, model: str) -> list[Rank]:
        """(provider, upstream model) ranks that serve a logical model; empty if none can."""
        ranks = self._ranks.get(model)
        if ranks is None:
            by_name = {p.name: p for p in self._providers}
            ranks = []
            for names in self.preference(model):
                rank = [
                    (name, up)
                    for name in names
                    if name in by_name and (up := upstream_model(by_name[name], model)) is not None
                ]
                if rank:
                    ranks.append(rank)
            if len(self._ranks) < MAX_CACHED:
                self._ranks[model] = ranks
        return ranks

    def capabilities(self, provider: str, model: str) -> frozenset[Capability]:
        """What `provider` is declared able to do for logical `model`."""
        return frozenset(Capability(c) for c in self._by_name[provider].capabilities_of(model))

    def able_ranks(self, model: str, needs: Needs) -> list[Rank]:
        """`ranks(model)` less the providers that lack any of `needs`."""
        if not needs:
            return self.ranks(model)
        key = (model, needs)
        ranks = self._able.get(key)
        if ranks is None:
            ranks = []
            for rank in self.ranks(model):
                able = [(n, up) for n, up in rank if needs <= self.capabilities(n, model)]
                if able:
                    ranks.append(able)
            if len(self._able) < MAX_CACHED:
                self._able[key] = ranks
        return ranks

    def resolve(self, model: str, needs: Iterable[Capability] = NOTHING) -> str:
        """The logical model a request names (the default when it names none: the embedding
        default for embeddings); ModelNotFound when nothing serves it, CapabilityMissing when
        nothing that serves it can do all it needs."""
        needs = needs if isinstance(needs, frozenset) else frozenset(needs)
        if not model:
            embedding = Capability.EMBEDDINGS in needs
            model = self.default_embedding_model if embedding else self.default_model
        if not self.ranks(model):
            raise ModelNotFound(model, self._known)
        if needs and not self.able_ranks(model, needs):
            # Name the first no one has, in declaration order (images before image URLs).
            for capability in (c for c in Capability if c in needs):
                if not self.able_ranks(model, frozenset({capability})):
                    raise CapabilityMissing(model, capability.value)
            raise CapabilityMissing(model, "+".join(sorted(c.value for c in needs)))
        return model

    def served(self) -> list[tuple[str, str]]:
        """(provider, logical model) for every named logical model and each provider that
        serves it, sorted."""
        return sorted(
            {
                (name, model)
                for model in self._known
                for rank in self.ranks(model)
                for name, _ in rank
            }
        )
