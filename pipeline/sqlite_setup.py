"""How newswatch sets up every SQLite connection: a busy timeout, WAL, relaxed fsync.

The records and the FTS5 index share one file by default, and several workers may open it at
once, so every connection waits for locks instead of failing, and the first openers of a new
file agree on WAL without tripping over each other.
"""

from __future__ import annotations

import sqlite3

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

BUSY_TIMEOUT_MS = 30_000


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out other first openers.

    The switch needs the file to itself. While another connection holds the write lock
    (creating the schema, say), SQLite answers "database is locked" at once instead of calling
    the busy handler, because waiting could deadlock. WAL is stored in the file, so the switch
    has to win only once; until it does, it is retried for as long as a lock is waited for.
    """
    for attempt in Retrying(retry=retry_if_exception(_is_locked),
                            stop=stop_after_delay(BUSY_TIMEOUT_MS / 1000),
                            wait=wait_random(0.01, 0.1), reraise=True):
        with attempt:
            conn.execute("PRAGMA journal_mode=WAL")  # an in-memory file answers "memory"


def set_up(conn: sqlite3.Connection) -> None:
    """Wait for locks, use WAL, and fsync at checkpoints only (safe under WAL)."""
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    use_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
