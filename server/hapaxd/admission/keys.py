"""API keys: which configured key a presented credential is, and what that key may do.

A presented key is hashed (SHA-256) and its digest compared with every configured digest by
`hmac.compare_digest`, with no early exit: how long a check takes depends on the number of keys,
never on how much of a guess was right. Only digests are kept; the key id is the caller's
identity from then on (logs, metrics, traces, deduplication). Plain Python: no grpc.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence

from hapaxd.config import KeySettings
from hapaxd.core.errors import MetadataKeyNotAllowed, ModelNotAllowed
from hapaxd.core.types import AnyRequest


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """A verified key: its id and its policy."""

    id: str
    admin: bool = False
    team: str = ""  # the key's `owner`: the team its usage and budgets count against
    metadata_keys: frozenset[str] | None = None  # None: any
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_streams: int | None = None
    cache_bypass: bool = True  # may its callers bypass the response cache (cache-control)
    _models: re.Pattern[str] = dataclasses.field(
        default=re.compile(".*"), repr=False, compare=False
    )

    @classmethod
    def of(cls, key: KeySettings) -> Caller:
        return cls(
            id=key.id,
            admin=key.admin,
            team=key.owner,
            metadata_keys=None if key.metadata_keys is None else frozenset(key.metadata_keys),
            requests_per_minute=key.requests_per_minute,
            tokens_per_minute=key.tokens_per_minute,
            max_concurrent_streams=key.max_concurrent_streams,
            cache_bypass=key.cache_bypass,
            _models=re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in key.models)),
        )

    def may_use(self, model: str) -> bool:
        """Whether the logical model matches one of the key's glob patterns (case-sensitive)."""
        return self._models.match(model) is not None

    def refused_metadata(self, keys: Iterable[str]) -> list[str]:
        """The request metadata keys this key may not send, in the order given."""
        if self.metadata_keys is None:
            return []
        return [k for k in keys if k not in self.metadata_keys]

    def authorize(self, request: AnyRequest) -> None:
        """Raise PermissionDenied unless the key may send this request (its model resolved)."""
        if not self.may_use(request.model):
            raise ModelNotAllowed(request.model, self.id)
        refused = self.refused_metadata(request.metadata)
        if refused:
            raise MetadataKeyNotAllowed(refused, self.id)


class KeyRing:
    """The configured keys, by digest."""

    def __init__(self, keys: Sequence[KeySettings]) -> None:
        # A key whose digest is empty (its secret was not checked at load) matches nothing.
        self._keys = [(bytes.fromhex(k.sha256), Caller.of(k)) for k in keys if k.sha256]
        # Mutual-TLS identities: a client certificate's subject or SAN -> the key it stands for.
        self._subjects = {
            k.client_cert_subject: Caller.of(k) for k in keys if k.client_cert_subject
        }
        self._sans = {k.client_cert_san: Caller.of(k) for k in keys if k.client_cert_san}

    @property
    def knows_certificates(self) -> bool:
        return bool(self._subjects or self._sans)

    def by_certificate(self, subject: str, sans: Iterable[str]) -> Caller | None:
        """The key a verified client certificate stands for: by its subject, else its first SAN
        that names one. (The TLS layer has checked the certificate against the client CA.)"""
        found = self._subjects.get(subject) if subject else None
        if found is not None:
            return found
        for name in sans:
            found = self._sans.get(name)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, presented: str | bytes) -> Caller | None:
        """The caller whose key was presented, or None. Constant time in what was presented."""
        raw = presented.encode() if isinstance(presented, str) else presented
        digest = hashlib.sha256(raw).digest()
        found: Caller | None = None
        for stored, caller in self._keys:
            if hmac.compare_digest(stored, digest):
                found = caller  # no break: every key is compared, whatever matched
        return found
