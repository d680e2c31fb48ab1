"""What a caller's request metadata says: its request id, who is calling, and the API key it
presents.

Read from the headers a door read from its transport when the call began (calls/record.py,
calls/door.py); never from the transport again. Plain Python.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any

REQUEST_ID_KEY = "x-request-id"
CACHE_KEY = "x-hapax-cache"  # what the response cache did: hit, miss, refresh, bypass
CACHE_AGE_KEY = "age"  # a hit's age in seconds (HTTP's Age)
CACHE_SIMILARITY_KEY = "x-hapax-cache-similarity"  # a semantic hit's cosine similarity
CREDENTIAL_KEYS = ("authorization", "x-api-key")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")


def read(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str]:
    """(request id, caller) from the invocation metadata.

    The request id is the caller's `x-request-id` when it is a sane token (1-128 characters of
    `[A-Za-z0-9._:/=+-]`), else a fresh one. The caller, for deduplication, is a digest of the
    credential the caller presents (`authorization` or `x-api-key`), so two tenants never share
    one answer; empty when anonymous.
    """
    request_id, caller = "", ""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and not request_id:
            if isinstance(value, str) and _REQUEST_ID.match(value):
                request_id = value
        elif key in CREDENTIAL_KEYS and not caller:
            raw = value if isinstance(value, bytes) else str(value).encode()
            caller = hashlib.sha256(raw).hexdigest()[:32]
    return request_id or uuid.uuid4().hex, caller


_BEARER = "bearer "


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def credential(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str]:
    """(the API key presented, or "", and when there is none, why): `authorization: Bearer <key>`
    (the scheme in any case) or `x-api-key: <key>`; the first of each counts."""
    bearer, api_key, other_scheme = "", "", False
    for key, value in metadata or ():
        if key == "authorization" and not (bearer or other_scheme):
            text = _text(value)
            if text[: len(_BEARER)].lower() == _BEARER and text[len(_BEARER) :].strip():
                bearer = text[len(_BEARER) :].strip()
            else:
                other_scheme = True
        elif key == "x-api-key" and not api_key:
            api_key = _text(value).strip()
    if bearer or api_key:
        return bearer or api_key, ""
    if other_scheme:
        return "", "the authorization metadata must be 'Bearer <key>'"
    return "", ""


def cache_metadata(cache: str, age: int | None, similarity: float | None) -> list[tuple[str, str]]:
    """The response metadata (gRPC trailers, HTTP headers) saying what the response cache did
    for a call that uses it: `x-hapax-cache` (a semantic hit says `hit` too, with its
    similarity), and a hit's `age`. Nothing for a call that does not use the cache."""
    if not cache:
        return []
    found = [(CACHE_KEY, "hit" if cache == "semantic_hit" else cache)]
    if age is not None:
        found.append((CACHE_AGE_KEY, str(age)))
    if similarity is not None:
        found.append((CACHE_SIMILARITY_KEY, f"{similarity:.4f}"))
    return found
