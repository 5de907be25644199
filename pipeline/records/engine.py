"""The records' plumbing: the engine (SQLite in WAL mode, or PostgreSQL), dialect-aware
inserts and the clock every record is stamped with."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from pipeline import sqlite_setup


def utcnow() -> datetime:
    return datetime.now(UTC)



def insert_for(dialect: str, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing/update`` on this dialect.

    SQLite and PostgreSQL spell "insert or ignore / upsert" the same way in SQLAlchemy, but
    through their own ``insert`` constructs; every conflict-tolerant write goes through here.
    """
    if dialect == "sqlite":
        return sqlite_dialect.insert(table)
    if dialect == "postgresql":
        return pg_dialect.insert(table)
    raise ValueError(f"records need SQLite or PostgreSQL, not {dialect}")


def by_columns(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by the columns they set, in first-seen order: one executemany statement
    per group instead of one round-trip per row (rows of one statement share their columns)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())


def engine_for(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},  # sqlite_setup sets the busy timeout
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            sqlite_setup.set_up(dbapi_connection)
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        return engine
    return create_engine(url, pool_pre_ping=True)



class Records:
    """What every entity's records need: the engine and its dialect (mixed into ``Store``)."""

    engine: Engine
    dialect: str

    def _insert(self, table: Table) -> Any:
        return insert_for(self.dialect, table)
