"""The caller's say over the cache for one call: the `cache-control` request header (HTTP door)
or metadata (gRPC), with HTTP's meanings (RFC 9111 request directives):

    no-cache        ask the provider even if an entry is there, and store the new answer
    no-store        neither read nor write the cache
    max-age=N       accept an entry no older than N seconds
    only-if-cached  answer from the cache or fail (CACHE_MISS), never ask a provider

Directives are comma-separated and case-insensitive; unknown ones and malformed values are
ignored, as HTTP caches do. Plain Python.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Directives:
    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    only_if_cached: bool = False

    @property
    def bypasses(self) -> bool:
        """Whether they would keep the call from reading the cache."""
        return self.no_cache or self.no_store


NONE = Directives()
MAX_HEADER = 256  # characters of a cache-control value read; the rest is ignored


def parse(value: str) -> Directives:
    """The directives of one cache-control value ("" for none)."""
    if not value:
        return NONE
    no_cache = no_store = only = False
    max_age: int | None = None
    for part in value[:MAX_HEADER].split(","):
        name, _, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "only-if-cached":
            only = True
        elif name == "max-age":
            digits = argument.strip().strip('"')
            if digits.isdigit() and len(digits) <= 10:
                age = int(digits)
                max_age = age if max_age is None else min(max_age, age)
    return Directives(no_cache, no_store, max_age, only)
