"""Alembic environment: runs on the connection that pipeline.migrations.upgrade passes in.

Without one (an ``alembic`` command line with ``sqlalchemy.url`` set), it opens its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from pipeline import schema
from pipeline.migrations import include_object


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=schema.metadata,
                      include_object=include_object, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("pipeline.migrations: pass a connection or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


main()
