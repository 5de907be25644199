"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.httpserver import LocalHTTPServer
from tests.support.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A scriptable HTTP server on 127.0.0.1 (see tests/support/httpserver.py)."""
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (tests/support/postgres.py); skips without one."""
    try:
        server = PostgresServer.from_environment()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database for one test."""
    with postgres_server.database() as url:
        yield url
