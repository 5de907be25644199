"""Opening a SQLite file another connection is writing: the WAL switch waits, never fails.

SQLite refuses the switch at once (no busy handler) while another connection holds the write
lock; first opens of a new file raced on it ("database is locked", once in CI).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.records.engine import engine_for
from pipeline.search.sqlite_fts import SqliteSearch
from pipeline.sqlite_setup import use_wal

HOLD_S = 0.4


def _held_file(path: Path) -> sqlite3.Connection:
    """A rollback-journal file whose write lock another connection holds for HOLD_S."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE earlier (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO earlier VALUES (1)")
    threading.Timer(HOLD_S, lambda: holder.execute("COMMIT")).start()
    return holder


def _open_records(path: Path) -> None:
    engine = engine_for(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    engine.dispose()


def _open_search(path: Path) -> None:
    search = SqliteSearch(path)
    assert search.count() == 0
    search.close()


@pytest.mark.parametrize("open_file", [_open_records, _open_search], ids=["records", "search"])
def test_first_open_waits_for_a_writer_instead_of_failing(tmp_path, open_file: Callable):
    path = tmp_path / "shared.db"
    holder = _held_file(path)
    started = time.monotonic()
    open_file(path)
    assert time.monotonic() - started >= HOLD_S * 0.9  # it waited for the writer
    holder.close()
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT count(*) FROM earlier").fetchone()[0] == 1  # kept


def test_a_plain_switch_is_refused_while_a_writer_holds_the_file(tmp_path):
    """Why use_wal retries: the bare pragma fails at once, whatever the busy timeout."""
    path = tmp_path / "shared.db"
    holder = _held_file(path)
    opener = sqlite3.connect(path, timeout=30)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        opener.execute("PRAGMA journal_mode=WAL")
    use_wal(opener)
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opener.close()
    holder.close()
