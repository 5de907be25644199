"""The record store: one object over every entity's records (pipeline/records/*).

SQLAlchemy Core over SQLite (WAL + busy timeout, so several processes can write) or
PostgreSQL. Every write is a short transaction and idempotent: the same input twice leaves
the same records. Alembic (pipeline/migrations) is the only way the schema is made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, update

from pipeline import schema
from pipeline.records.articles import ArticleRecords
from pipeline.records.engine import by_columns, engine_for
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

    def record_fetch(self, feed_id: int, run_id: str, outcome: str, at: datetime,
                     **values: Any) -> None:
        """A fetched feed's new state and its outcome (feed and run counters) in one
        transaction: the fetch stage writes once per feed, not three times."""
        with self.engine.begin() as conn:
            conn.execute(update(schema.feeds).where(schema.feeds.c.feed_id == feed_id)
                         .values(**values))
            self._count_feed_outcome(conn, feed_id, outcome, at, 1)
            self._count(conn, run_id, "fetch", outcome, 1)

    def record_fetches(self, run_id: str, fetches: Sequence[tuple[int, str, datetime,
                                                                  dict[str, Any]]]) -> None:
        """:meth:`record_fetch` for many feeds (feed id, outcome, time, new state) in one
        transaction of executemany statements: the bookkeeping of a run's 304s."""
        if not fetches:
            return
        f, o = schema.feeds, schema.feed_outcomes
        outcomes: dict[tuple[int, str], list[Any]] = {}
        for feed_id, outcome, at, _values in fetches:
            seen = outcomes.setdefault((feed_id, outcome), [0, at])
            seen[0] += 1
            seen[1] = max(seen[1], at)
        counted = Counter(outcome for _, outcome, _, _ in fetches)
        with self.engine.begin() as conn:
            for params in by_columns({"b_feed_id": feed_id, **values}
                                     for feed_id, _, _, values in fetches):
                conn.execute(update(f).where(f.c.feed_id == bindparam("b_feed_id")), params)
            stmt = self._insert(o)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["feed_id", "outcome"],
                set_={"count": o.c.count + stmt.excluded["count"],
                      "last_at": stmt.excluded.last_at}),
                [{"feed_id": feed_id, "outcome": outcome, "count": n, "last_at": at}
                 for (feed_id, outcome), (n, at) in outcomes.items()])
            for outcome, n in counted.items():
                self._count(conn, run_id, "fetch", outcome, n)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the record store at a SQLAlchemy URL (``sqlite:///…`` or ``postgresql+psycopg://…``).

    With ``create`` (the default) the schema is created or migrated to the newest revision
    first; that is a single read when it is already current.
    """
    store = Store(engine_for(url))
    if create:
        store.create_schema()
    return store
