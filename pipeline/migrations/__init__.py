"""Alembic migrations of the record store, run in code (no alembic.ini, nothing downloaded).

:func:`upgrade` is what :func:`pipeline.records.open_store` calls: it brings SQLite or
PostgreSQL records to the newest revision under a lock, so several processes opening one
store at once (Airflow tasks, alert workers) migrate it exactly once. A database made by
``metadata.create_all`` before migrations existed is adopted by revision 0001 (missing tables
are created, existing ones kept) and stamped.

The SQLite FTS5 search backend keeps its own tables in the same file
(pipeline/search/sqlite_fts.py); they are not part of the record schema, so migrations and
schema comparisons ignore every table that :data:`pipeline.schema.metadata` does not define.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection

from pipeline import schema

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
PG_LOCK_KEY = 0x6E657773_77617463  # "newswatc"


def config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code; ``connection`` is used by env.py when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError("no migrations found in " + str(SCRIPT_LOCATION))
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None for a new or pre-migration database."""
    return MigrationContext.configure(connection).get_current_revision()


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """Alembic filter: only the record tables (not FTS5 search tables, not alembic's own)."""
    if type_ == "table":
        return name in schema.metadata.tables
    table = getattr(obj, "table", None)
    return table is None or table.name in schema.metadata.tables


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the database's migration lock until it commits.

    PostgreSQL: a transaction-scoped advisory lock (DDL is transactional there). SQLite:
    ``BEGIN IMMEDIATE`` takes the write lock up front, so a second process waits (busy
    timeout) instead of racing to create the same tables.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def upgrade(engine: Engine) -> str:
    """Migrate the records at ``engine`` to the newest revision; returns that revision.

    Cheap when there is nothing to do (one read, no lock), so every ``open_store`` may call it.
    """
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return head
    with _locked(engine) as conn:
        current = current_revision(conn)  # again: another process may have migrated meanwhile
        if current == head:
            return head
        if current is None:
            existing = set(inspect(conn).get_table_names()) & set(schema.metadata.tables)
            if existing:
                log.info("adopting records created before migrations (%d tables)",
                         len(existing))
        command.upgrade(config(conn), "head")
    return head


def compare(connection: Connection) -> list[Any]:
    """Differences between the database and :data:`pipeline.schema.metadata` (empty = same)."""
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(connection, opts={
        "compare_type": True, "include_object": include_object})
    return compare_metadata(context, schema.metadata)


__all__ = ["PG_LOCK_KEY", "compare", "config", "current_revision", "head_revision",
           "include_object", "upgrade"]
