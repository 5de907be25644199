"""Article records: feed entries, extracted text and its versions, and the search-index marks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from pipeline import schema
from pipeline.language import detect_language
from pipeline.models import FeedEntry
from pipeline.records.engine import Records, utcnow
from pipeline.urls import article_id_for, canonical_url, content_hash


def entry_fingerprint(entry: FeedEntry) -> str:
    """Changes when the feed says something new about an article (then it is re-extracted)."""
    parts = [
        entry.title or "",
        entry.summary or "",
        entry.content or "",
        entry.updated_at.isoformat() if entry.updated_at else "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]



class ArticleRecords(Records):
    """Articles: entries from feeds, their text and versions, and what the index holds."""

    def upsert_entry(self, feed_id: int, source: str | None, entry: FeedEntry) -> str:
        """Record a feed entry. Returns its outcome: new, linked, unchanged or entry-updated.

        The same article linked from two feeds is stored once with both feeds recorded; an
        entry whose feed text changed is queued for re-extraction, when the feed speaks for
        the article's feed text (``_owning_feeds``).
        """
        with self.engine.begin() as conn:
            return self._write_entries(conn, feed_id, source, [entry], utcnow())[0]

    def upsert_entries(self, feed_id: int, source: str | None,
                       entries: Sequence[FeedEntry]) -> list[tuple[str, str | None]]:
        """Record a feed's entries (as :meth:`upsert_entry`): ``(outcome, error)`` per entry.

        One transaction and a handful of multi-row statements per feed, not three statements
        and a transaction per entry, is what lets a 50,000-entry feed be stored in seconds.
        Should the batch fail, each entry is retried on its own so one bad entry costs only
        itself (``item-error`` with its error); a database in trouble still raises.
        """
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                return [(outcome, None) for outcome in
                        self._write_entries(conn, feed_id, source, entries, now)]
        except OperationalError:
            raise  # locked, gone, disk full: the feed fails, not one entry
        except Exception:
            pass  # find the entry at fault below, one transaction each
        results: list[tuple[str, str | None]] = []
        for entry in entries:
            try:
                results.append((self.upsert_entry(feed_id, source, entry), None))
            except OperationalError:
                raise
            except Exception as exc:
                results.append(("item-error", f"{type(exc).__name__}: {exc}"[:500]))
        return results

    def _write_entries(self, conn: Connection, feed_id: int, source: str | None,
                       entries: Sequence[FeedEntry], now: datetime) -> list[str]:
        """The outcome of each entry; an article listed twice in one batch counts once (the
        first listing wins, the others are ``unchanged``)."""
        a, af = schema.articles, schema.article_feeds
        outcomes: list[str] = ["unchanged"] * len(entries)
        firsts: dict[str, tuple[int, FeedEntry, str]] = {}  # article_id -> (index, entry, fp)
        for index, entry in enumerate(entries):
            if not entry.link and not entry.guid:
                outcomes[index] = "no-link"
                continue
            article_id = article_id_for(entry.link, entry.guid)
            if article_id not in firsts:
                firsts[article_id] = (index, entry, entry_fingerprint(entry))
        if not firsts:
            return outcomes
        ids = list(firsts)
        stored = self._entry_fingerprints(conn, ids)
        new_rows = [{
            "article_id": article_id, "url": canonical_url(entry.link) if entry.link else None,
            "link": entry.link, "guid": entry.guid, "source": source, "title": entry.title,
            "text": "", "authors": entry.authors,
            "published_at": entry.published_at or entry.updated_at, "language": entry.language,
            "version": 0, "entry_title": entry.title,
            "entry_summary": _entry_fallback_text(entry), "entry_fingerprint": fingerprint,
            "extraction_status": "pending", "extraction_attempts": 0, "first_seen_at": now,
            "updated_at": now,
        } for article_id, (_, entry, fingerprint) in firsts.items() if article_id not in stored]
        inserted: set[str] = set()
        if new_rows:
            stmt = (self._insert(a).on_conflict_do_nothing(index_elements=["article_id"])
                    .returning(a.c.article_id))
            inserted = set(conn.execute(stmt, new_rows).scalars())
            raced = [row["article_id"] for row in new_rows if row["article_id"] not in inserted]
            if raced:  # another worker recorded these since our read
                stored.update(self._entry_fingerprints(conn, raced))
        differs = [article_id for article_id, (_, _, fingerprint) in firsts.items()
                   if article_id not in inserted and stored.get(article_id) != fingerprint]
        owners = self._owning_feeds(conn, differs) if differs else {}
        changed = []
        for article_id, (index, entry, fingerprint) in firsts.items():
            if article_id in inserted:
                outcomes[index] = "new"
            elif stored.get(article_id) != fingerprint and owners.get(article_id,
                                                                        feed_id) >= feed_id:
                outcomes[index] = "entry-updated"
                changed.append({"b_id": article_id, "b_title": entry.title,
                                "b_summary": _entry_fallback_text(entry),
                                "b_fingerprint": fingerprint})
        if changed:
            conn.execute(update(a).where(a.c.article_id == bindparam("b_id")).values(
                entry_title=bindparam("b_title"), entry_summary=bindparam("b_summary"),
                entry_fingerprint=bindparam("b_fingerprint"), extraction_status="pending",
                extraction_attempts=0, updated_at=now), changed)
        # RETURNING, not rowcount: PostgreSQL drivers report -1 for INSERT ... ON CONFLICT.
        link = (self._insert(af).on_conflict_do_nothing(index_elements=["article_id", "feed_id"])
                .returning(af.c.article_id))
        linked = set(conn.execute(link, [{"article_id": article_id, "feed_id": feed_id,
                                          "first_seen_at": now} for article_id in ids]).scalars())
        for article_id, (index, _entry, _fp) in firsts.items():
            if outcomes[index] == "unchanged" and article_id in linked:
                outcomes[index] = "linked"  # already known from another feed
        return outcomes

    @staticmethod
    def _owning_feeds(conn: Connection, article_ids: list[str]) -> dict[str, int]:
        """The feed that speaks for each article's feed text: the lowest-numbered one that
        lists it (feeds are numbered in the order they were configured). A fixed rule, so
        concurrent fetches of two feeds listing one URL with different headlines cannot swap
        the role between runs; otherwise each would rewrite the entry in turn and the
        unchanged article would be re-downloaded and re-versioned on every run. A feed with a
        lower number than the current owner takes over (once)."""
        af = schema.article_feeds
        found: dict[str, int] = {}
        for start in range(0, len(article_ids), 500):
            found.update(conn.execute(
                select(af.c.article_id, func.min(af.c.feed_id))
                .where(af.c.article_id.in_(article_ids[start:start + 500]))
                .group_by(af.c.article_id)).tuples().all())
        return found

    def _entry_fingerprints(self, conn: Connection, article_ids: list[str]) -> dict[str, str]:
        a = schema.articles
        found: dict[str, str] = {}
        for start in range(0, len(article_ids), 500):
            found.update(conn.execute(
                select(a.c.article_id, a.c.entry_fingerprint)
                .where(a.c.article_id.in_(article_ids[start:start + 500]))).tuples().all())
        return found

    @staticmethod
    def _waiting_for_text(max_attempts: int) -> Any:
        a = schema.articles
        return or_(a.c.extraction_status == "pending",
                   and_(a.c.extraction_status == "retry", a.c.extraction_attempts < max_attempts))

    def count_articles_to_extract(self, max_attempts: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(schema.articles)
                                .where(self._waiting_for_text(max_attempts))).scalar_one()

    def articles_to_extract(self, limit: int, max_attempts: int) -> list[dict[str, Any]]:
        """The next ``limit`` articles waiting for text, in publication order: a backlog's
        chunks then cover consecutive spans of time, so the stories each chunk compares with
        (its time window) stay few however long the backlog is."""
        a = schema.articles
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(a.c.article_id, a.c.url, a.c.link, a.c.entry_title, a.c.entry_summary,
                       a.c.published_at, a.c.source, a.c.extraction_attempts,
                       a.c.text_source, a.c.language)
                .where(self._waiting_for_text(max_attempts))
                .order_by(func.coalesce(a.c.published_at, a.c.first_seen_at), a.c.article_id)
                .limit(limit)
            ).mappings().all()
        return [dict(r) for r in rows]

    def save_article_text(
        self,
        article_id: str,
        *,
        title: str | None,
        text: str,
        text_source: str,
        status: str,
        outcome: str,
        authors: list[str] | None = None,
        published_at: datetime | None = None,
        language: str | None = None,
        language_decided: bool = False,
    ) -> str:
        """Store extracted (or fallback) text. Returns ``new-version`` or ``unchanged``.

        A changed body is a new version of the same article: latest text kept on the article,
        every version kept in ``article_versions``. ``language`` is a declaration (a hint the
        text is checked against) unless ``language_decided``: the caller already weighed it
        against this text (``language.language_verdict``).
        """
        a = schema.articles
        now = utcnow()
        digest = content_hash(title, text)
        with self.engine.begin() as conn:
            current = conn.execute(select(a.c.content_hash, a.c.version, a.c.published_at,
                                          a.c.extraction_attempts, a.c.language)
                                   .where(a.c.article_id == article_id)).first()
            if current is None:
                raise KeyError(article_id)
            values: dict[str, Any] = {
                "extraction_status": status, "extraction_outcome": outcome,
                "extraction_attempts": current.extraction_attempts + 1, "extracted_at": now,
            }
            result = "unchanged"
            if digest != current.content_hash and text.strip():
                version = current.version + 1
                values.update(
                    title=title, text=text, text_source=text_source, content_hash=digest,
                    version=version, updated_at=now, authors=authors or [],
                    # what the text is written in; the page's, else the feed's, declaration
                    # is only a hint (pipeline/language.py)
                    language=language if language_decided else detect_language(
                        title, text, language or current.language),
                )
                if published_at and current.published_at is None:
                    values["published_at"] = published_at
                conn.execute(self._insert(schema.article_versions).values(
                    article_id=article_id, version=version, content_hash=digest, title=title,
                    text=text, text_source=text_source, seen_at=now,
                ).on_conflict_do_nothing(index_elements=["article_id", "version"]))
                result = "new-version"
            conn.execute(update(a).where(a.c.article_id == article_id).values(**values))
        return result

    def record_extraction_attempt(self, article_id: str, *, status: str, outcome: str) -> None:
        """Note a failed re-extraction without touching the text already stored."""
        a = schema.articles
        with self.engine.begin() as conn:
            conn.execute(update(a).where(a.c.article_id == article_id).values(
                extraction_status=status, extraction_outcome=outcome, extracted_at=utcnow(),
                extraction_attempts=a.c.extraction_attempts + 1))

    def get_article(self, article_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.articles)
                               .where(schema.articles.c.article_id == article_id)
                               ).mappings().first()
            if row is None:
                return None
            article = dict(row)
            article["feeds"] = [r[0] for r in conn.execute(
                select(schema.article_feeds.c.feed_id)
                .where(schema.article_feeds.c.article_id == article_id))]
        return article

    def article_versions(self, article_id: str) -> list[dict[str, Any]]:
        v = schema.article_versions
        with self.engine.connect() as conn:
            rows = conn.execute(select(v.c.version, v.c.content_hash, v.c.title, v.c.seen_at,
                                       v.c.text_source)
                                .where(v.c.article_id == article_id)
                                .order_by(v.c.version)).mappings().all()
        return [dict(r) for r in rows]

    def iter_articles(self, *, only_with_text: bool = True,
                      batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every article (for re-indexing and evaluation), in stable order."""
        a = schema.articles
        last = ""
        while True:
            query = select(a).where(a.c.article_id > last).order_by(a.c.article_id).limit(batch)
            if only_with_text:
                query = query.where(a.c.version > 0)
            with self.engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(query).mappings().all()]
            if not rows:
                return
            yield from rows
            last = rows[-1]["article_id"]

    def articles_needing_index(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Articles whose text or story changed since the search index last received them."""
        a = schema.articles
        fingerprint = _index_fingerprint_expr()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(a).where(a.c.version > 0)
                .where(or_(a.c.indexed_fingerprint.is_(None),
                           a.c.indexed_fingerprint != fingerprint))
                .order_by(a.c.article_id).limit(limit)
            ).mappings().all()
        return [dict(r) for r in rows]

    def mark_indexed(self, articles: Iterable[dict[str, Any]]) -> None:
        a = schema.articles
        with self.engine.begin() as conn:
            for article in articles:
                conn.execute(update(a).where(a.c.article_id == article["article_id"])
                             .values(indexed_fingerprint=index_fingerprint(article)))

    def reset_indexed(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.articles).values(indexed_fingerprint=None))

    def counts(self) -> dict[str, int]:
        a = schema.articles
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(a)).scalar_one()
            by_status = dict(conn.execute(select(a.c.extraction_status, func.count())
                                          .group_by(a.c.extraction_status)).all())
            feeds = conn.execute(select(func.count()).select_from(schema.feeds)).scalar_one()
            stories = conn.execute(select(func.count()).select_from(schema.stories).where(
                schema.stories.c.merged_into.is_(None))).scalar_one()  # not folded ones
            versions = conn.execute(select(func.count())
                                    .select_from(schema.article_versions)).scalar_one()
        return {"feeds": feeds, "articles": total, "versions": versions, "stories": stories,
                **{f"articles_{k}": v for k, v in by_status.items()}}



def _entry_fallback_text(entry: FeedEntry) -> str:
    """What the feed itself says about an article: its content, else its summary."""
    content = (entry.content or "").strip()
    summary = (entry.summary or "").strip()
    return content if len(content) >= len(summary) else summary


def index_fingerprint(article: dict[str, Any]) -> str:
    """What the search index must hold for an article: its version and story."""
    return f"{article.get('content_hash') or ''}:{article.get('story_id') or ''}"[:40]


def _index_fingerprint_expr():
    a = schema.articles
    return func.substr(func.coalesce(a.c.content_hash, "") + ":" +
                       func.coalesce(a.c.story_id, ""), 1, 40)



# ---- reads and writes for the later stages (stories, index, alerts, web) ---------------------

def articles_by_story(store: Records, story_ids: Sequence[str],
                      columns: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The articles of each story (``columns`` of each), in no particular order."""
    a = schema.articles
    selected = [a.c[name] for name in dict.fromkeys(["story_id", *columns])]
    ids = list(story_ids)
    by_story: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for row in conn.execute(select(*selected).where(
                    a.c.story_id.in_(ids[start:start + 500]))).mappings():
                by_story.setdefault(row["story_id"], []).append(
                    {name: row[name] for name in columns})
    return by_story


def load_texts(store: Records, articles: list[dict[str, Any]]) -> None:
    """Fill in ``text`` only where needed (scoring, summaries): bodies are the bulk."""
    missing = [art for art in articles if "text" not in art]
    a = schema.articles
    with store.engine.connect() as conn:
        for start in range(0, len(missing), 500):
            chunk = {art["article_id"]: art for art in missing[start:start + 500]}
            for article_id, text in conn.execute(select(a.c.article_id, a.c.text).where(
                    a.c.article_id.in_(list(chunk)))):
                chunk[article_id]["text"] = text or ""


def article_embeddings(store: Records, versions: dict[str, int]) -> dict[str, bytes]:
    """The stored embedding of each article's given version (absent: none stored)."""
    v = schema.article_versions
    ids = list(versions)
    found: dict[str, bytes] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(select(v.c.article_id, v.c.version, v.c.embedding).where(
                v.c.article_id.in_(ids[start:start + 500]), v.c.embedding.is_not(None))).all()
            found.update({aid: blob for aid, version, blob in rows
                          if versions.get(aid) == version and blob})
    return found


def feeds_of(store: Records, article_ids: Sequence[str]) -> dict[str, list[str]]:
    """Feed ids (as strings, stable across renames) each article was seen in."""
    af = schema.article_feeds
    ids = list(article_ids)
    feeds: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(select(af.c.article_id, af.c.feed_id)
                                .where(af.c.article_id.in_(ids[start:start + 500]))
                                .order_by(af.c.article_id, af.c.feed_id)).all()
            for article_id, feed_id in rows:
                feeds.setdefault(article_id, []).append(str(feed_id))
    return feeds


def replace_index_marks(store: Records, sent: Iterable[dict[str, Any]]) -> None:
    """The index now holds exactly ``sent``: say so in the records, atomically."""
    a = schema.articles
    with store.engine.begin() as conn:
        conn.execute(update(a).values(indexed_fingerprint=None))
        for article in sent:
            conn.execute(update(a).where(a.c.article_id == article["article_id"])
                         .values(indexed_fingerprint=index_fingerprint(article)))


def list_sources(store: Records) -> list[str]:
    """Every outlet credited on some article, sorted."""
    a = schema.articles
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.c.source).where(a.c.source.is_not(None)).distinct()).all()
    return sorted(r[0] for r in rows if r[0])
