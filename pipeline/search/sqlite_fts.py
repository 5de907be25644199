"""Search on SQLite FTS5: the default backend, living beside the records (no server).

Two tables: ``search_docs`` (one row per article: filters, display fields, embedding) and
``search_fts``, an FTS5 table over (title, text) whose rowid is ``search_docs.id``. Ranking is
bm25 with the title weighted 5:1 over the body; semantic search is a numpy brute-force cosine
over the filtered documents; hybrid combines both on one scale (``base.fuse_hybrid``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import sqlite_setup
from pipeline.cjk import display_text, fts_text, query_variants
from pipeline.embeddings import pack_vector, unpack_vector
from pipeline.search.base import (
    KEYWORD_DEPTH,
    SEMANTIC_DEPTH,
    FusedHit,
    HybridPolicy,
    ParsedQuery,
    SearchDocument,
    SearchHit,
    SearchQuery,
    SearchResults,
    check_query,
    fuse_hybrid,
    group_by_story,
    leading_snippet,
    parse_query_text,
)

TITLE_WEIGHT = 5.0  # bm25 column weights: a title match outranks a body-only match
TEXT_WEIGHT = 1.0
SNIPPET_TOKENS = 24
WRITE_CHUNK = 200  # documents per write transaction: keeps the write lock short

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS search_docs (
        id INTEGER PRIMARY KEY,
        article_id TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL DEFAULT '',
        url TEXT,
        source TEXT,
        published_at REAL,  -- epoch seconds, UTC
        language TEXT,
        story_id TEXT,
        content_hash TEXT,
        feeds TEXT NOT NULL DEFAULT '[]',  -- JSON list
        embedding BLOB  -- pipeline.embeddings.pack_vector (int8 + scale)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_search_docs_published ON search_docs (published_at)",
    "CREATE INDEX IF NOT EXISTS ix_search_docs_source ON search_docs (source)",
    "CREATE INDEX IF NOT EXISTS ix_search_docs_story ON search_docs (story_id)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
        title, text, tokenize='porter unicode61 remove_diacritics 2'
    )""",
]

_HIT_COLUMNS = "d.id, d.article_id, d.title, d.url, d.source, d.published_at, d.story_id"


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _fts_string(raw: str) -> str:
    """An FTS5 string literal: everything inside is text for the tokenizer, never syntax.
    CJK characters are spaced as in the index (pipeline/cjk.py)."""
    return '"' + fts_text(raw).replace('"', '""') + '"'


def _spellings(phrase: str) -> list[str]:
    """A phrase as FTS5 strings, in each of its Chinese spellings (Traditional/Simplified)."""
    return [_fts_string(variant) for variant in query_variants(phrase)]


def fts5_expression(parsed: ParsedQuery) -> str:
    """Translate a parsed query to an FTS5 MATCH expression built only from quoted strings."""
    clauses = []
    for clause in parsed.clauses:
        alternatives = [spelling for phrase in clause for spelling in _spellings(phrase)]
        clauses.append(alternatives[0] if len(alternatives) == 1
                       else "(" + " OR ".join(alternatives) + ")")
    expr = " AND ".join(clauses)
    for phrase in parsed.excluded:
        for spelling in _spellings(phrase):
            expr = f"({expr}) NOT {spelling}"
    return expr


def fts5_fallback(text: str) -> str:
    """Last resort when an expression is rejected: every token quoted and AND-ed.

    Operators and excluded tokens are dropped rather than quoted, so the fallback can widen a
    query but never turns ``-baseball`` into a requirement.
    """
    tokens = [tok.replace('"', "") for tok in (text or "").split()
              if tok not in ("OR", "AND", "NOT") and not tok.startswith("-")]
    return " AND ".join(_fts_string(tok) for tok in tokens if any(c.isalnum() for c in tok))


def _sqlite_path(path_or_url: str | Path) -> str:
    value = str(path_or_url)
    if value.startswith("sqlite:///"):
        value = value.removeprefix("sqlite:///")
    if not value:
        raise ValueError("SqliteSearch needs a file path, a sqlite:/// URL or ':memory:'")
    if value != ":memory:":
        Path(value).parent.mkdir(parents=True, exist_ok=True)
    return value


class SqliteSearch:
    """FTS5 search in a SQLite file (by default the record store's own file).

    One connection guarded by a lock (safe across threads); WAL and a busy timeout let other
    processes write the same file; every write is a short transaction.
    """

    name = "sqlite"

    def __init__(self, path_or_url: str | Path, hybrid: HybridPolicy | None = None) -> None:
        self.path = _sqlite_path(path_or_url)
        self.hybrid = hybrid or HybridPolicy()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._ready = False

    # ---- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            sqlite_setup.set_up(conn)
            self._conn = conn
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: take the write lock up front)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self.ensure_ready()
        with self._lock:
            yield self._connection()

    def ensure_ready(self) -> None:
        """Create the search tables (idempotent)."""
        if self._ready:
            return
        with self._write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        self._ready = True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._ready = False

    # ---- writes --------------------------------------------------------------------------

    def index(self, documents: list[SearchDocument], *, target: str | None = None) -> int:
        """Upsert by article_id: the metadata row is updated in place, its FTS row replaced.

        ``target`` is ignored: a SQLite rebuild writes into the live tables."""
        self.ensure_ready()
        for start in range(0, len(documents), WRITE_CHUNK):
            with self._write() as conn:
                for doc in documents[start:start + WRITE_CHUNK]:
                    self._upsert(conn, doc)
        return len(documents)

    @staticmethod
    def _upsert(conn: sqlite3.Connection, doc: SearchDocument) -> None:
        embedding = None
        if doc.embedding is not None and len(doc.embedding):
            embedding = pack_vector(np.asarray(doc.embedding, dtype=np.float32))
        values = (doc.title or "", doc.url, doc.source, _epoch(doc.published_at), doc.language,
                  doc.story_id, doc.content_hash, json.dumps(list(doc.feeds or [])), embedding)
        row = conn.execute("SELECT id FROM search_docs WHERE article_id = ?",
                           (doc.article_id,)).fetchone()
        if row is None:
            cursor = conn.execute(
                "INSERT INTO search_docs (title, url, source, published_at, language, story_id,"
                " content_hash, feeds, embedding, article_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*values, doc.article_id))
            rowid = cursor.lastrowid
        else:
            rowid = row[0]
            conn.execute(
                "UPDATE search_docs SET title=?, url=?, source=?, published_at=?, language=?,"
                " story_id=?, content_hash=?, feeds=?, embedding=? WHERE id=?",
                (*values, rowid))
            conn.execute("DELETE FROM search_fts WHERE rowid = ?", (rowid,))
        conn.execute("INSERT INTO search_fts (rowid, title, text) VALUES (?, ?, ?)",
                     (rowid, fts_text(doc.title), fts_text(doc.text)))

    def delete(self, article_ids: list[str]) -> None:
        self.ensure_ready()
        ids = list(article_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._write() as conn:
                conn.execute("DELETE FROM search_fts WHERE rowid IN (SELECT id FROM search_docs"
                             f" WHERE article_id IN ({marks}))", chunk)
                conn.execute(f"DELETE FROM search_docs WHERE article_id IN ({marks})", chunk)

    def clear(self) -> None:
        self.ensure_ready()
        with self._write() as conn:
            conn.execute("DELETE FROM search_fts")
            conn.execute("DELETE FROM search_docs")

    def begin_rebuild(self) -> str | None:
        """Empty the tables; the rebuild writes into them (one file, no alias to swap)."""
        self.clear()
        return None

    def finish_rebuild(self, target: str | None) -> None:
        """Nothing to swap: the rebuilt rows are already live."""

    def abort_rebuild(self, target: str | None) -> None:
        """Nothing to throw away; the next run's index stage refills what is missing."""

    def index_stories(self, stories: list[dict[str, Any]]) -> int:
        """No-op: SQLite search reads stories from the records; kept for API parity with ES."""
        return 0

    def delete_stories(self, story_ids: list[str]) -> None:
        """No-op, as :meth:`index_stories`."""

    # ---- reads ---------------------------------------------------------------------------

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM search_docs").fetchone()[0])

    def search(self, query: SearchQuery) -> SearchResults:
        """Keyword (bm25), semantic (cosine) or hybrid (both on one scale); see the module."""
        check_query(query)
        parsed = parse_query_text(query.text)
        vector = query.vector if query.vector is not None and len(query.vector) else None
        mode = query.mode if vector is not None else "keyword"
        if mode == "keyword":
            hits, total = self._keyword(parsed, query, query.limit)
        elif mode == "semantic":
            hits = self._semantic(vector, query, query.limit)
            total = len(hits)
        else:
            hits, total = self._hybrid(parsed, vector, query)
        return SearchResults(hits=hits, total=total,
                             groups=group_by_story(hits) if query.by_story else None)

    def _filters(self, query: SearchQuery) -> tuple[str, list[Any]]:
        sql, params = [], []
        if query.since is not None:
            sql.append("d.published_at >= ?")
            params.append(_epoch(query.since))
        if query.until is not None:
            sql.append("d.published_at < ?")
            params.append(_epoch(query.until))
        if query.sources:
            sql.append(f"d.source IN ({','.join('?' * len(query.sources))})")
            params.extend(query.sources)
        if query.story_id is not None:
            sql.append("d.story_id = ?")
            params.append(query.story_id)
        return "".join(f" AND {s}" for s in sql), params

    def _match(self, sql: str, params: list[Any], parsed: ParsedQuery,
               text: str) -> list[sqlite3.Row] | list[tuple]:
        """Run ``sql`` with the FTS expression as first parameter, falling back on errors."""
        with self._read() as conn:
            for expr in (fts5_expression(parsed), fts5_fallback(text)):
                if not expr:
                    continue
                try:
                    return conn.execute(sql, [expr, *params]).fetchall()
                except sqlite3.OperationalError as exc:
                    if "fts5" not in str(exc).lower() and "syntax" not in str(exc).lower():
                        raise
        return []

    def _keyword(self, parsed: ParsedQuery, query: SearchQuery,
                 depth: int) -> tuple[list[SearchHit], int]:
        if parsed.empty:
            return [], 0
        where, params = self._filters(query)
        base = ("FROM search_fts JOIN search_docs d ON d.id = search_fts.rowid"
                f" WHERE search_fts MATCH ?{where}")
        rows = self._match(
            f"SELECT {_HIT_COLUMNS},"
            f" snippet(search_fts, 1, '[[', ']]', '…', {SNIPPET_TOKENS}),"
            f" bm25(search_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS score {base}"
            " ORDER BY score, d.article_id LIMIT ?", [*params, depth], parsed, query.text)
        total_rows = self._match(f"SELECT count(*) {base}", params, parsed, query.text)
        total = int(total_rows[0][0]) if total_rows else 0
        hits = [self._hit(row, snippet=display_text(row[7]), score=-float(row[8]))
                for row in rows]
        return hits, total

    def _nearest(self, vector: Sequence[float], query: SearchQuery, depth: int,
                 allowed: set[int] | None = None) -> list[tuple[float, str, tuple]]:
        """Brute-force cosine over the filtered documents with an embedding of the same size
        (and, if given, a rowid in ``allowed``): (cosine, article_id, row), best first."""
        target = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(target))
        if norm == 0.0 or (allowed is not None and not allowed):
            return []
        target = target / norm
        where, params = self._filters(query)
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_HIT_COLUMNS}, d.embedding FROM search_docs d"
                                f" WHERE d.embedding IS NOT NULL{where}", params).fetchall()
        scored: list[tuple[float, str, tuple]] = []
        for row in rows:
            if allowed is not None and row[0] not in allowed:
                continue
            stored = unpack_vector(row[7])
            if stored.shape != target.shape:
                continue  # embedded with another model: not comparable
            stored_norm = float(np.linalg.norm(stored))
            if stored_norm == 0.0:
                continue
            scored.append((float(stored @ target) / stored_norm, row[1], row))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return scored[:depth]

    def _semantic(self, vector: Sequence[float], query: SearchQuery,
                  depth: int) -> list[SearchHit]:
        top = self._nearest(vector, query, depth)
        texts = self._texts([row[0] for _, _, row in top])
        return [self._hit(row, snippet=leading_snippet(texts.get(row[0], "")), score=score)
                for score, _, row in top]

    def _admissible(self, parsed: ParsedQuery) -> set[int] | None:
        """Rowids a semantic neighbour may come from: containing the query's quoted phrases
        and none of its exclusions (None: no such demand, every document)."""
        phrases = parsed.phrase_clauses()
        if phrases:
            required = ParsedQuery(phrases, parsed.excluded, (True,) * len(phrases))
            rows = self._match("SELECT rowid FROM search_fts WHERE search_fts MATCH ?", [],
                               required, "")
            return {row[0] for row in rows}
        if not parsed.excluded:
            return None
        excluded = ParsedQuery((parsed.excluded,), (), (True,))
        rows = self._match("SELECT rowid FROM search_fts WHERE search_fts MATCH ?", [],
                           excluded, "")
        with self._read() as conn:
            every = {row[0] for row in conn.execute("SELECT id FROM search_docs")}
        return every - {row[0] for row in rows}

    def _hybrid(self, parsed: ParsedQuery, vector: Sequence[float],
                query: SearchQuery) -> tuple[list[SearchHit], int]:
        """Keyword matches reordered by similarity, plus close neighbours (``fuse_hybrid``).

        total = keyword matches plus the admitted neighbours that do not match the words.
        """
        if parsed.empty:
            return [], 0
        where, params = self._filters(query)
        base = ("FROM search_fts JOIN search_docs d ON d.id = search_fts.rowid"
                f" WHERE search_fts MATCH ?{where}")
        keyword = [(row[0], -float(row[1])) for row in self._match(
            f"SELECT d.article_id, bm25(search_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS score"
            f" {base} ORDER BY score, d.article_id LIMIT ?", [*params, KEYWORD_DEPTH],
            parsed, query.text)]
        total_rows = self._match(f"SELECT count(*) {base}", params, parsed, query.text)
        keyword_total = int(total_rows[0][0]) if total_rows else 0
        nearest = self._nearest(vector, query, SEMANTIC_DEPTH, self._admissible(parsed))
        fused = fuse_hybrid(keyword, [(article_id, cos) for cos, article_id, _ in nearest],
                            self.hybrid)
        added = [hit.article_id for hit in fused if not hit.keyword_match]
        if keyword_total > len(keyword):  # the keyword list was cut: some may still match
            added = sorted(set(added) - self._matching(parsed, query, added))
        return self._page(parsed, query, fused[:query.limit]), keyword_total + len(added)

    def _page(self, parsed: ParsedQuery, query: SearchQuery,
              fused: list[FusedHit]) -> list[SearchHit]:
        """Hits for the fused page: highlighted snippets for matches, the lead otherwise."""
        wanted = [hit.article_id for hit in fused]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._read() as conn:
            rows = {row[1]: row for row in conn.execute(
                f"SELECT {_HIT_COLUMNS} FROM search_docs d WHERE d.article_id IN ({marks})",
                wanted)}
        snippets = {row[0]: row[1] for row in self._match(
            f"SELECT d.article_id, snippet(search_fts, 1, '[[', ']]', '…', {SNIPPET_TOKENS})"
            " FROM search_fts JOIN search_docs d ON d.id = search_fts.rowid"
            f" WHERE search_fts MATCH ? AND d.article_id IN ({marks})", wanted, parsed,
            query.text)}
        texts = self._texts([rows[a][0] for a in wanted if a in rows and a not in snippets])
        hits = []
        for fused_hit in fused:
            row = rows.get(fused_hit.article_id)
            if row is None:  # deleted between the two reads
                continue
            snippet = snippets.get(fused_hit.article_id) or leading_snippet(
                texts.get(row[0], ""))
            hits.append(self._hit(row, snippet=snippet, score=fused_hit.score))
        return hits

    def _matching(self, parsed: ParsedQuery, query: SearchQuery,
                  article_ids: list[str]) -> set[str]:
        if parsed.empty or not article_ids:
            return set()
        marks = ",".join("?" * len(article_ids))
        rows = self._match(
            "SELECT d.article_id FROM search_fts JOIN search_docs d ON d.id = search_fts.rowid"
            f" WHERE search_fts MATCH ? AND d.article_id IN ({marks})", article_ids, parsed,
            query.text)
        return {row[0] for row in rows}

    def _texts(self, rowids: list[int]) -> dict[int, str]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        with self._read() as conn:
            rows = conn.execute(f"SELECT rowid, text FROM search_fts WHERE rowid IN ({marks})",
                                rowids).fetchall()
        return {rowid: display_text(text) for rowid, text in rows}

    @staticmethod
    def _hit(row: Sequence[Any], *, snippet: str, score: float) -> SearchHit:
        return SearchHit(article_id=row[1], title=row[2] or "", url=row[3], source=row[4],
                         published_at=_from_epoch(row[5]), snippet=snippet or "",
                         score=score, story_id=row[6])
