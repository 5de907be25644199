"""The record store: one object over every entity's records (pipeline/records/*).

SQLAlchemy Core over SQLite (WAL + busy timeout, so several processes can write) or
PostgreSQL. Every write is a short transaction and idempotent: the same input twice leaves
the same records. Alembic (pipeline/migrations) is the only way the schema is made.
"""

from __future__ import annotations

from sqlalchemy import Engine

from pipeline.records.articles import ArticleRecords
from pipeline.records.engine import engine_for
from pipeline.records.feeds import FeedRecords
from pipeline.records.runs import RunRecords


class Store(FeedRecords, RunRecords, ArticleRecords):
    """Library API over the records. Create with :func:`open_store`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def create_schema(self) -> None:
        """Create or upgrade the schema through the Alembic migrations (pipeline/migrations),
        so SQLite and PostgreSQL records evolve the same way and older databases are adopted."""
        from pipeline import migrations

        migrations.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the record store at a SQLAlchemy URL (``sqlite:///…`` or ``postgresql+psycopg://…``).

    With ``create`` (the default) the schema is created or migrated to the newest revision
    first; that is a single read when it is already current.
    """
    store = Store(engine_for(url))
    if create:
        store.create_schema()
    return store
