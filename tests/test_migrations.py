"""Alembic migrations of the records: the same schema as pipeline/schema.py on SQLite and
PostgreSQL, adoption of databases made before migrations, concurrent first opens."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text

from pipeline import migrations, schema
from pipeline.records import open_store
from pipeline.search.base import SearchDocument
from pipeline.search.sqlite_fts import SqliteSearch
from tests.support.threads import in_threads

NOW = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
ALERT_TABLES = {"alerts", "alert_deliveries", "article_watch_scores"}
HEAD = "0003"  # the latest revision in pipeline/migrations/versions


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("pg_url")


def _state(url: str) -> tuple[str | None, list[Any], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return (migrations.current_revision(conn), migrations.compare(conn),
                    set(inspect(conn).get_table_names()))
    finally:
        engine.dispose()


def test_new_database_gets_exactly_the_schema(db_url):
    open_store(db_url).close()
    revision, diff, tables = _state(db_url)
    assert revision == migrations.head_revision() == HEAD
    assert diff == []
    assert set(schema.metadata.tables) | {"alembic_version"} == tables
    store = open_store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(select(schema.meta.c.value).where(
            schema.meta.c.key == "schema_version")).scalar_one() == "1"
    store.close()


def test_comparison_sees_a_difference(db_url):
    """The schema check above is not vacuous: a missing index is reported."""
    open_store(db_url).close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_articles_story"))
    with engine.connect() as conn:
        diff = migrations.compare(conn)
    engine.dispose()
    assert [d[0] for d in diff] == ["add_index"]
    assert diff[0][1].name == "ix_articles_story"


def test_database_from_create_all_is_adopted_and_keeps_its_rows(db_url):
    """Records made by the code before migrations (metadata.create_all, alert tables created
    only once alerts ran) are stamped, completed and left intact."""
    engine = create_engine(db_url)
    old_tables = [t for t in schema.metadata.sorted_tables if t.name not in ALERT_TABLES]
    schema.metadata.create_all(engine, tables=old_tables)
    with engine.begin() as conn:
        conn.execute(schema.feeds.insert().values(url="https://example.com/feed.xml",
                                                  enabled=True, dead=False,
                                                  consecutive_failures=0, fetch_count=3,
                                                  created_at=NOW))
        conn.execute(schema.meta.insert().values(key="schema_version", value="1"))
    engine.dispose()

    store = open_store(db_url)
    assert [f.fetch_count for f in store.list_feeds()] == [3]
    store.close()
    revision, diff, tables = _state(db_url)
    assert revision == HEAD and diff == []
    assert tables >= ALERT_TABLES


def test_foreign_table_with_our_name_is_refused(db_url):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE feeds (url TEXT)"))
    engine.dispose()
    with pytest.raises(RuntimeError, match=r"'feeds' lacks columns \['consecutive_failures'"):
        open_store(db_url)
    revision, _diff, tables = _state(db_url)
    assert revision is None and "articles" not in tables  # rolled back, nothing stamped


def test_concurrent_first_opens_migrate_once(db_url):
    in_threads(4, lambda _i: open_store(db_url).close())
    revision, diff, _tables = _state(db_url)
    assert revision == HEAD and diff == []
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()


def test_downgrade_to_base_and_back(db_url):
    store = open_store(db_url)
    with store.engine.begin() as conn:
        command.downgrade(migrations.config(conn), "base")
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    store.close()
    open_store(db_url).close()
    revision, diff, _tables = _state(db_url)
    assert revision == HEAD and diff == []


def test_current_store_opens_without_a_write_lock(tmp_path):
    """Every task opens the store: when nothing is to migrate, opening only reads, so it
    never waits behind another process's write transaction."""
    path = tmp_path / "records.db"
    open_store(f"sqlite:///{path}").close()
    writer = sqlite3.connect(path, timeout=0.1)
    writer.execute("BEGIN IMMEDIATE")
    try:
        store = open_store(f"sqlite:///{path}")
        assert store.list_feeds() == []
        store.close()
    finally:
        writer.rollback()
        writer.close()


def test_fts_search_tables_in_the_record_file_are_left_alone(tmp_path):
    """SQLite search lives in the records' own file but is not part of the record schema."""
    path = tmp_path / "records.db"
    search = SqliteSearch(path)  # search first: its tables exist before the records'
    search.ensure_ready()
    search.index([SearchDocument(article_id="a1", title="Taiwan Strait", text="Ships.",
                                 url="https://example.com/a1", source="Example",
                                 published_at=NOW, language="en", story_id=None,
                                 content_hash="h1", feeds=["1"])])
    search.close()
    open_store(f"sqlite:///{path}").close()
    revision, diff, tables = _state(f"sqlite:///{path}")
    assert revision == HEAD and diff == []
    assert "search_docs" in tables
    search = SqliteSearch(path)
    assert search.count() == 1
    search.close()
