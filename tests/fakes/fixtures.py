"""Pytest fixtures for the fake upstream, loaded by tests/conftest.py as a plugin
(`pytest_plugins = ["tests.fakes.fixtures"]`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .upstream import FakeUpstream


@pytest_asyncio.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started fake upstream on 127.0.0.1 (a free port), stopped after the test. The test fails
    if the fake was sent a chat body its vendor's SDK types refuse (tests/fakes/upstream/shapes)."""
    async with FakeUpstream() as fake:
        yield fake
        assert not fake.shape_errors, "\n".join(fake.shape_errors)
