"""ResponseCache: which calls use the cache, and the lookups and stores the call pipeline makes.

A call uses the cache when its logical model matches an entry of `cache.models` and its key a
pattern of `cache.keys` (`plan` says None otherwise: the call says nothing about a cache). Then:

- only a request that asks for one answer rather than a sample (temperature 0 or a seed, as
  deduplication decides) is stored, unless the model's `sampled` (or `cache.sampled`) allows
  sampled ones; any other is a `bypass`;
- the caller's cache-control directives (control.py) may refresh (`no-cache`), bypass
  (`no-store`), bound the age (`max-age`) or forbid asking a provider (`only-if-cached`); a key
  whose `cache_bypass` is false has its no-cache and no-store ignored;
- a lookup is exact (the SHA-256 key, keys.py) and, for a model with `semantic`, then semantic
  (semantic.py): the nearest earlier request in the same scope and with the same settings;
- whatever goes wrong with the store (Redis down, an entry that does not decode, an embedding
  that fails) makes the call a miss: counted (CacheFailed) and logged at most once per
  WARN_EVERY seconds, never an error to the caller.

The store and the semantic indexes (CacheState) outlive reloads; a ResponseCache is one
generation's policy over them. Plain Python: no grpc, no HTTP client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from hapaxd.admission.keys import Caller
from hapaxd.cache import entries
from hapaxd.cache.control import Directives
from hapaxd.cache.entries import Entry, EntryError
from hapaxd.cache.keys import cache_key, scope_of, settings_shape
from hapaxd.cache.semantic import SemanticIndex, guard_terms, semantic_text
from hapaxd.cache.store import CacheStore, CacheStoreError
from hapaxd.config import CacheSettings, ModelCacheSettings, SemanticCacheSettings
from hapaxd.core.events import CacheFailed, CacheLookup, CacheStored, Listeners, emit
from hapaxd.core.router import Router
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import CompletionRequest, EmbeddingRequest

log = logging.getLogger("hapaxd.cache")

WARN_EVERY = 60.0  # seconds between log lines about the store failing
MAX_REMEMBERED = 1024  # model names whose cache settings are remembered
# (embedding model, text, deadline) -> the text's vector, through the gateway's own router
Embed = Callable[[str, str, float | None], Awaitable[Sequence[float]]]

HIT, SEMANTIC_HIT, MISS, REFRESH, BYPASS = "hit", "semantic_hit", "miss", "refresh", "bypass"


@dataclasses.dataclass(slots=True)
class Plan:
    """What the cache does for one call."""

    key: str  # the entry's cache key (hex SHA-256)
    scope: str
    read: bool  # look it up
    write: bool  # store the answer
    max_age: int | None
    only_if_cached: bool
    ttl: float
    label: str  # what the answer says when it is not a hit: miss, refresh or bypass
    semantic: SemanticCacheSettings | None = None
    shape: str = ""  # the semantic lookup's settings, which must match exactly
    text: str = ""  # the text it embeds
    vector: Sequence[float] | None = None  # its embedding, once made


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    age: int  # whole seconds since it was stored
    similarity: float | None  # a semantic hit's cosine similarity; None: exact


class CacheState:
    """The store and the semantic indexes (one per model), kept across reloads."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.indexes: dict[str, SemanticIndex] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.warned_at: dict[str, float] = {}

    def index(self, model: str, settings: SemanticCacheSettings) -> SemanticIndex:
        found = self.indexes.get(model)
        if found is None:
            found = self.indexes[model] = SemanticIndex(settings.max_entries)
        return found

    async def drain(self) -> None:
        """Until every store on its way has been made."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.store.aclose()


class ResponseCache:
    def __init__(
        self,
        settings: CacheSettings,
        state: CacheState,
        *,
        embed: Embed | None = None,
        listeners: Listeners = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.on = bool(settings.models)
        self._models = [
            (re.compile(fnmatch.translate(pattern)), model)
            for pattern, model in settings.models.items()
        ]
        self._by_model: dict[str, ModelCacheSettings | None] = {}
        self._keys = re.compile("|".join(f"(?:{fnmatch.translate(k)})" for k in settings.keys))
        self._embed = embed
        self._listeners = listeners
        self._clock = clock

    def _model(self, model: str) -> ModelCacheSettings | None:
        """The cache settings of a logical model (the first pattern it matches), remembered."""
        known = self._by_model
        if model in known:
            return known[model]
        found = next((settings for pattern, settings in self._models if pattern.match(model)), None)
        if len(known) >= MAX_REMEMBERED:
            known.clear()  # model names a provider passes on as they come: keep this small
        known[model] = found
        return found

    def plan(
        self, request: CompletionRequest, caller: Caller | None, directives: Directives
    ) -> Plan | None:
        """What the cache does for `request` (its model resolved), or None when the cache is
        not on for its model and key."""
        settings = self._model(request.model)
        if settings is None:
            return None
        if caller is not None and not self._keys.match(caller.id):
            return None
        if caller is not None and not caller.cache_bypass and directives.bypasses:
            directives = Directives(
                max_age=directives.max_age, only_if_cached=directives.only_if_cached
            )
        sampled = self.settings.sampled if settings.sampled is None else settings.sampled
        storable = sampled or request.is_deterministic()
        scope = scope_of(caller, settings.scope)
        key = cache_key(request, scope)
        ttl = self.settings.ttl if settings.ttl is None else settings.ttl
        if directives.no_store or not storable:
            return Plan(key, scope, False, False, None, directives.only_if_cached, ttl, BYPASS)
        plan = Plan(
            key,
            scope,
            read=not directives.no_cache,
            write=True,
            max_age=directives.max_age,
            only_if_cached=directives.only_if_cached,
            ttl=ttl,
            label=REFRESH if directives.no_cache else MISS,
        )
        semantic = settings.semantic
        if semantic is not None and self._embed is not None and not _has_images(request):
            plan.semantic = semantic
            plan.text = semantic_text(request.messages, semantic.text)
            plan.shape = settings_shape(request, semantic.text)
        return plan

    async def lookup(self, plan: Plan, deadline: float | None) -> Hit | None:
        """The entry that answers the call, exact or semantic, or None (counted as the plan's
        label). A store that fails makes a miss."""
        if not plan.read:
            emit(self._listeners, CacheLookup(plan.label))
            return None
        hit = await self._exact(plan.key, plan)
        if hit is None and plan.semantic is not None and plan.text:
            hit = await self._semantic(plan, deadline)
        if hit is None:
            emit(self._listeners, CacheLookup(plan.label))
            return None
        emit(self._listeners, CacheLookup(HIT if hit.similarity is None else SEMANTIC_HIT))
        return hit

    async def _exact(self, key: str, plan: Plan, similarity: float | None = None) -> Hit | None:
        store = self.state.store
        try:  # what this process holds first: no await for a hit on it
            entry = store.find(key)
            if entry is None and store.remote:
                entry = await store.get(key)
        except CacheStoreError as exc:
            self._failed("get", str(exc))
            return None
        except EntryError as exc:
            self._failed("decode", str(exc))
            return None
        if entry is None:
            return None
        held = self._clock() - entry.stored_at
        if held >= plan.ttl:  # never past its time to live, whatever the store kept
            return None
        age = max(0, int(held))
        if plan.max_age is not None and age > plan.max_age:
            return None
        return Hit(entry, age, similarity)

    async def _semantic(self, plan: Plan, deadline: float | None) -> Hit | None:
        semantic = plan.semantic
        assert semantic is not None and self._embed is not None
        try:
            plan.vector = await self._embed(semantic.embedding_model, plan.text, deadline)
        except Exception as exc:
            self._failed("embed", f"{type(exc).__name__}: {exc}"[:200])
            return None
        index = self.state.index(self._index_name(plan), semantic)
        found = index.nearest(
            plan.scope, plan.shape, plan.vector, guard_terms(plan.text), semantic.threshold
        )
        if found is None:
            return None
        key, similarity = found
        hit = await self._exact(key, plan, similarity)
        if hit is None:
            index.remove(key)  # expired or evicted from the store
        return hit

    @staticmethod
    def _index_name(plan: Plan) -> str:
        assert plan.semantic is not None
        return plan.semantic.embedding_model

    def store(self, plan: Plan, entry: Entry, deadline: float | None = None) -> None:
        """Store `entry` under the plan's key, in the background (the answer does not wait)."""
        if not plan.write:
            return
        task = asyncio.get_running_loop().create_task(self._store(plan, entry, deadline))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    async def _store(self, plan: Plan, entry: Entry, deadline: float | None) -> None:
        data = entries.encode(entry)
        if len(data) > self.settings.max_entry_bytes:
            return
        try:
            await self.state.store.put(plan.key, entry, data, plan.ttl)
        except CacheStoreError as exc:
            self._failed("put", str(exc))
            return
        emit(self._listeners, CacheStored(len(data), self.state.store.held))
        semantic = plan.semantic
        if semantic is None or not plan.text or self._embed is None:
            return
        if plan.vector is None:  # not looked up (no-cache): embedded now
            try:
                plan.vector = await self._embed(semantic.embedding_model, plan.text, deadline)
            except Exception as exc:
                self._failed("embed", f"{type(exc).__name__}: {exc}"[:200])
                return
        index = self.state.index(self._index_name(plan), semantic)
        index.add(plan.scope, plan.shape, plan.vector, guard_terms(plan.text), plan.key)

    def _failed(self, operation: str, why: str) -> None:
        backend = self.state.store.name
        emit(self._listeners, CacheFailed(backend, operation, why))
        now = time.monotonic()
        if now - self.state.warned_at.get(operation, -WARN_EVERY) >= WARN_EVERY:
            self.state.warned_at[operation] = now
            log.warning(
                "response cache (%s): %s failed, the call goes on as a miss: %s "
                "(logged once a minute while it lasts)",
                backend,
                operation,
                why,
            )


def embedder(routes: RouteTable, router: Router) -> Embed:
    """Embed through the gateway's own router: the embedding model resolved as an Embed call's
    would be, with its failover, retries and breakers."""

    async def embed(model: str, text: str, deadline: float | None) -> Sequence[float]:
        resolved = routes.resolve(model, EMBEDDING_NEEDS)
        vectors, _ = await router.embed(EmbeddingRequest(resolved, (text,)), deadline)
        return vectors.vectors[0]

    return embed


EMBEDDING_NEEDS = EmbeddingRequest("", ()).needs()


def _has_images(request: CompletionRequest) -> bool:
    return any(m.parts and m.images for m in request.messages)
