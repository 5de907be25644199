"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.records import Store
from tests.support.httpserver import LocalHTTPServer
from tests.support.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache() -> Iterator[None]:
    """Every test (and the CLI processes tests start) shares one exported-model cache, so
    the ONNX export happens once per machine instead of once per test's data_dir."""
    key = "NEWSWATCH_EMBEDDING__MODEL_CACHE"
    previous = os.environ.get(key)
    os.environ[key] = previous or str(Path(tempfile.gettempdir()) / "newswatch-test-models")
    yield
    if previous is None:
        os.environ.pop(key, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite record store in the test's tmp_path (migrated to the newest schema)."""
    from pipeline.records import open_store

    opened = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    yield opened
    opened.close()


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
