"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.httpserver import LocalHTTPServer


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A scriptable HTTP server on 127.0.0.1 (see tests/support/httpserver.py)."""
    with LocalHTTPServer() as server:
        yield server
