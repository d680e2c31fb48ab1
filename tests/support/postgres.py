"""The PostgreSQL server the ledger's tests run against: benchmarks/postgres_server.py's
PostgresServer (a real server, initdb'd on a free loopback port in a temporary directory), and
the fixtures that start one per session and make a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.postgres_server import PostgresMissing, PostgresServer, find_bindir

__all__ = ["PostgresMissing", "PostgresServer", "find_bindir", "postgres_dsn", "postgres_server"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except PostgresMissing as missing:
        pytest.fail(str(missing))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new empty database on the session's server."""
    return postgres_server.create_database()
