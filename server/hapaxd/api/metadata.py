"""What a caller's request metadata says: its request id and who is calling.

Read once, when a call begins (api/call.py). Transport layer.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any

REQUEST_ID_KEY = "x-request-id"
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
