"""Settings with auth on: a few keys whose plaintext the tests present."""

from __future__ import annotations

import asyncio
from typing import Any

from hapaxd import config
from tests.conftest import Gateway, make_settings
from tests.fakes.upstream import FakeUpstream
from tests.observability.conftest import observe  # noqa: F401  (a fixture, used by name)
from tests.support.redis import redis_server  # noqa: F401  (a fixture, used by name)

# id -> the key itself (only tests know it; the gateway sees digests)
SEARCH_KEY = "hpx_search-0123456789abcdef"
OPS_KEY = "hpx_ops-fedcba9876543210"
NARROW_KEY = "hpx_narrow-aaaaaaaaaaaaaaaa"


def keys(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The test keys: `search` (any model), `ops` (admin), `narrow` (chat-* only, metadata
    `tenant` only); `overrides[id]` adds or changes fields of one."""
    found = [
        {"id": "search", "owner": "search-team", "sha256": config.digest(SEARCH_KEY)},
        {"id": "ops", "owner": "platform", "admin": True, "sha256": config.digest(OPS_KEY)},
        {
            "id": "narrow",
            "sha256": config.digest(NARROW_KEY),
            "models": ["chat-*"],
            "metadata_keys": ["tenant"],
        },
    ]
    for key in found:
        key.update(overrides.get(key["id"], {}))
    return found


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def auth_settings(fake: FakeUpstream | None = None, **auth: Any) -> config.Settings:
    """Auth on with the test keys; the openai fake serves every model when given, else local."""
    extra: dict[str, Any] = {}
    if fake is not None:
        extra["providers"] = [
            {
                "name": "up",
                "type": "openai",
                "base_url": fake.base_url("openai"),
                "models": {"*": "gpt-test"},
            }
        ]
    return make_settings(
        auth={"keys": keys(), **auth}, router={"retry": {"max_attempts": 1}}, **extra
    )


async def settled(gateway: Gateway) -> None:
    """Until every call has left the gateway (its ticket settled as its handler unwound)."""
    async with asyncio.timeout(5):
        while gateway.app.door.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
