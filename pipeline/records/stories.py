"""Story records: the stories, the articles' places in them, and the embeddings the story
stage reads (MiniLM on ``article_versions``, multilingual in ``multilingual_embeddings``).

The grouping itself is in-memory code (pipeline/stories.py, pipeline/crosslingual.py); this
module only reads what it needs and writes what it decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Row

from pipeline import schema
from pipeline.records.engine import Records, by_columns, utcnow
from pipeline.story_text import NAME_CHARS


def english_condition(column: Any) -> ColumnElement[bool]:
    """SQL for ``crosslingual.uses_english_model`` on a language column."""
    return or_(column.is_(None), column == "en", column.like("en-%"))


def _not_placed() -> ColumnElement[bool]:
    """A current version not yet placed in a story (new, or edited since it was placed)."""
    a = schema.articles
    return or_(a.c.story_assigned_version.is_(None), a.c.story_assigned_version != a.c.version)


def _when() -> Any:
    a = schema.articles
    return func.coalesce(a.c.published_at, a.c.first_seen_at)


# ---- the English pass: MiniLM embeddings -------------------------------------------------------

def _to_embed(model_keys: Sequence[str], english_only: bool) -> tuple[Any, Any]:
    a, v = schema.articles, schema.article_versions
    current = or_(*(v.c.embedding_model == k for k in model_keys))
    todo = (and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version),
            or_(v.c.embedding.is_(None), v.c.embedding_model.is_(None), ~current))
    if english_only:  # other languages: crosslingual.py
        todo = (todo[0], and_(todo[1], english_condition(a.c.language)))
    return todo


def count_versions_to_embed(store: Records, model_keys: Sequence[str], *,
                            english_only: bool) -> int:
    """Current article versions without an embedding from any of ``model_keys``."""
    a, v = schema.articles, schema.article_versions
    join, where = _to_embed(model_keys, english_only)
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(v.join(a, join))
                            .where(where)).scalar_one()


def versions_to_embed(store: Records, model_keys: Sequence[str], *, english_only: bool,
                      after: str, limit: int) -> list[Row]:
    """The next ``limit`` of those versions after article id ``after``: id, version, title,
    text."""
    a, v = schema.articles, schema.article_versions
    join, where = _to_embed(model_keys, english_only)
    with store.engine.connect() as conn:
        return list(conn.execute(select(v.c.article_id, v.c.version, v.c.title, v.c.text)
                                 .join(a, join).where(where)
                                 .where(v.c.article_id > after)
                                 .order_by(v.c.article_id).limit(limit)).all())


def save_embeddings(store: Records, rows: Iterable[tuple[str, int, bytes]],
                    model_key: str) -> None:
    """Store (article id, version, packed vector) embeddings made with ``model_key``: one
    transaction, one executemany statement."""
    v = schema.article_versions
    params = [{"b_article_id": article_id, "b_version": version, "embedding": blob,
               "embedding_model": model_key} for article_id, version, blob in rows]
    if not params:
        return
    with store.engine.begin() as conn:
        conn.execute(update(v).where(and_(v.c.article_id == bindparam("b_article_id"),
                                          v.c.version == bindparam("b_version"))), params)


# ---- the English pass: assignment --------------------------------------------------------------

def active_story_rows(store: Records, since: datetime, until: datetime,
                      story_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Stories active in [since, until] (plus ``story_ids``), by id."""
    s = schema.stories
    wanted = sorted(set(story_ids))
    condition = and_(s.c.last_seen_at >= since, s.c.first_seen_at <= until)
    if wanted:
        condition = or_(condition, s.c.story_id.in_(wanted))
    condition = and_(condition, s.c.merged_into.is_(None))  # folded stories hold no articles
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(s).where(condition)
                                              .order_by(s.c.story_id)).mappings().all()]


def embedded_members(store: Records, story_ids: Sequence[str], lead_chars: int) -> list[Row]:
    """The embedded current versions of these stories' articles: id, story, title, the first
    ``lead_chars`` of the text (``lead``) and the embedding."""
    a, v = schema.articles, schema.article_versions
    ids = list(story_ids)
    rows: list[Row] = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows += conn.execute(
                select(a.c.article_id, a.c.story_id, a.c.title,
                       func.substr(a.c.text, 1, lead_chars).label("lead"), v.c.embedding)
                .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
                .where(a.c.story_id.in_(ids[start:start + 500]))
                .where(v.c.embedding.is_not(None))
                .order_by(a.c.article_id)).all()
    return rows


def articles_to_place_soon(store: Records, *, english_only: bool) -> list[Row]:
    """published_at, first_seen_at and story_id of the current versions that
    :func:`articles_to_place` will return once the English pass has embedded them (read
    before, so the stories window can load while the model embeds; the caller checks)."""
    a, v = schema.articles, schema.article_versions
    query = (select(a.c.published_at, a.c.first_seen_at, a.c.story_id)
             .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
             .where(a.c.version > 0).where(_not_placed()))
    if english_only:  # the others are placed by crosslingual.py and get no MiniLM vector
        query = query.where(english_condition(a.c.language))
    with store.engine.connect() as conn:
        return list(conn.execute(query).all())


def articles_to_place(store: Records) -> list[dict[str, Any]]:
    """Embedded current versions not yet placed in a story at that version, in publication
    order."""
    a, v = schema.articles, schema.article_versions
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(a.c.article_id, a.c.title, a.c.text, a.c.source, a.c.published_at,
                   a.c.first_seen_at, a.c.story_id, a.c.version, v.c.embedding)
            .join(v, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
            .where(a.c.version > 0).where(v.c.embedding.is_not(None))
            .where(_not_placed())
            .order_by(_when(), a.c.article_id)).mappings().all()]


STORY_FIELDS = ("title", "first_seen_at", "last_seen_at", "article_count", "sources",
                "centroid", "updated_at")


def save_assignments(store: Records, placements: Iterable[tuple[str, dict[str, Any]]],
                     stories: Iterable[dict[str, Any]],
                     merges: Sequence[tuple[str, str]] = ()) -> None:
    """One transaction: each article's new values (story, duplicate, assigned version),
    each stored story folded into another (``merges``: (absorbed, survivor), in the order they
    were made; see :func:`_fold`) and each changed story's row (``story_id`` plus
    :data:`STORY_FIELDS`), upserted; one executemany statement per shape of row rather than
    one round-trip per row."""
    a, s = schema.articles, schema.stories
    updates = by_columns({"b_article_id": article_id, **values}
                         for article_id, values in placements)
    story_rows = list(stories)
    with store.engine.begin() as conn:
        for params in updates:
            conn.execute(update(a).where(a.c.article_id == bindparam("b_article_id")), params)
        for absorbed, survivor in merges:
            _fold(conn, absorbed, survivor)
        if story_rows:
            stmt = store._insert(s)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["story_id"], set_={c: stmt.excluded[c] for c in STORY_FIELDS}),
                story_rows)


def _fold(conn: Any, absorbed: str, survivor: str) -> None:
    """Move every article of ``absorbed`` (whatever its language) into ``survivor`` and keep
    the absorbed row as a pointer to it, with no articles of its own; stories folded into the
    absorbed one before now point at the survivor directly."""
    a, s = schema.articles, schema.stories
    conn.execute(update(a).where(a.c.story_id == absorbed).values(story_id=survivor))
    conn.execute(update(s).where(s.c.merged_into == absorbed).values(merged_into=survivor))
    conn.execute(update(s).where(s.c.story_id == absorbed).values(
        merged_into=survivor, article_count=0, updated_at=utcnow()))


MAX_MERGE_HOPS = 16  # pointers are kept flat (_fold); this only guards against a loop


def resolve_story_id(store: Records, story_id: str) -> str | None:
    """The story that holds ``story_id``'s articles now: itself, or the story it was folded
    into (links in earlier alerts, searches by story id); None for an unknown id."""
    s = schema.stories
    current = story_id
    with store.engine.connect() as conn:
        for _ in range(MAX_MERGE_HOPS):
            row = conn.execute(select(s.c.merged_into).where(s.c.story_id == current)).first()
            if row is None:
                return None if current == story_id else current
            if not row.merged_into or row.merged_into == current:
                return current
            current = row.merged_into
    return current


def merged_into_each(store: Records, story_ids: Sequence[str]) -> dict[str, list[str]]:
    """The stories folded into each of these stories (survivor -> absorbed ids, sorted)."""
    s = schema.stories
    ids = [i for i in story_ids if i]
    found: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for row in conn.execute(select(s.c.story_id, s.c.merged_into)
                                    .where(s.c.merged_into.in_(ids[start:start + 500]))
                                    .order_by(s.c.story_id)):
                found.setdefault(row.merged_into, []).append(row.story_id)
    return found


# ---- other languages: multilingual embeddings (pipeline/crosslingual.py) ----------------------

def versions_without_multilingual(store: Records, *, other_languages_only: bool = False,
                                  in_stories_active: tuple[datetime, datetime] | None = None
                                  ) -> list[Row]:
    """Current article versions with no multilingual embedding: id, version, title, text.
    ``other_languages_only``: only articles not in English; ``in_stories_active`` (since,
    until): only members of the stories active then."""
    a, v, m = schema.articles, schema.article_versions, schema.multilingual_embeddings
    query = (select(v.c.article_id, v.c.version, v.c.title, v.c.text)
             .join(a, and_(a.c.article_id == v.c.article_id, a.c.version == v.c.version))
             .outerjoin(m, and_(m.c.article_id == v.c.article_id, m.c.version == v.c.version))
             .where(m.c.article_id.is_(None)))
    if other_languages_only:
        query = query.where(~english_condition(a.c.language))
    if in_stories_active is not None:
        since, until = in_stories_active
        s = schema.stories
        query = query.where(a.c.story_id.in_(
            select(s.c.story_id).where(s.c.last_seen_at >= since, s.c.first_seen_at <= until)))
    with store.engine.connect() as conn:
        return list(conn.execute(query.order_by(v.c.article_id)).all())


def other_language_member_between(store: Records, since: datetime, until: datetime) -> bool:
    """Whether any story active in [since, until] holds an article not in English."""
    a, s = schema.articles, schema.stories
    with store.engine.connect() as conn:
        return conn.execute(
            select(a.c.article_id).join(s, s.c.story_id == a.c.story_id)
            .where(s.c.last_seen_at >= since, s.c.first_seen_at <= until)
            .where(~english_condition(a.c.language)).limit(1)).first() is not None


def save_multilingual(store: Records, rows: Iterable[tuple[str, int, bytes]],
                      model: str) -> None:
    """Store (article id, version, packed vector) multilingual embeddings (never twice)."""
    m = schema.multilingual_embeddings
    with store.engine.begin() as conn:
        for article_id, version, blob in rows:
            conn.execute(store._insert(m).values(
                article_id=article_id, version=version, embedding=blob, model=model,
            ).on_conflict_do_nothing(index_elements=["article_id", "version"]))


def multilingual_members(store: Records, since: datetime, until: datetime
                         ) -> tuple[list[str], list[Row]]:
    """Stories active in [since, until] (ids, sorted) and their members with a multilingual
    embedding: id, story, language, time (``at``), embedding, title and the text's first
    ``NAME_CHARS`` characters (their names)."""
    s, a, m = schema.stories, schema.articles, schema.multilingual_embeddings
    rows: list[Row] = []
    with store.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(
            select(s.c.story_id).where(s.c.last_seen_at >= since, s.c.first_seen_at <= until,
                                       s.c.merged_into.is_(None))
            .order_by(s.c.story_id))]
        for start in range(0, len(ids), 500):
            rows += conn.execute(
                select(a.c.article_id, a.c.story_id, a.c.language, _when().label("at"),
                       m.c.embedding, a.c.title,
                       func.substr(a.c.text, 1, NAME_CHARS).label("text"))
                .join(m, and_(m.c.article_id == a.c.article_id, m.c.version == a.c.version))
                .where(a.c.story_id.in_(ids[start:start + 500])).order_by(a.c.article_id)
            ).all()
    return ids, rows


def other_language_articles_to_place(store: Records) -> list[dict[str, Any]]:
    """Non-English current versions with a multilingual embedding, not yet placed (with the
    title and the text's first ``NAME_CHARS`` characters: their names)."""
    a, m = schema.articles, schema.multilingual_embeddings
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(a.c.article_id, a.c.title, func.substr(a.c.text, 1, NAME_CHARS).label("text"),
                   a.c.source, a.c.language, a.c.story_id, a.c.version, a.c.published_at,
                   a.c.first_seen_at, m.c.embedding)
            .join(m, and_(m.c.article_id == a.c.article_id, m.c.version == a.c.version))
            .where(a.c.version > 0).where(~english_condition(a.c.language))
            .where(_not_placed())).mappings().all()]


def save_other_language_assignments(store: Records,
                                    decisions: list[tuple[Any, str | None, str | None]],
                                    started: dict[str, Any], joined: dict[str, list[Any]]
                                    ) -> None:
    """One transaction: each article's story (``decisions``: row, story, duplicate_of), the
    stories started (``started``: id → first row; ``joined``: id → rows that joined it) and
    the stored stories that gained members."""
    a, s = schema.articles, schema.stories
    now = utcnow()
    with store.engine.begin() as conn:
        for row, story_id, duplicate_of in decisions:
            values: dict[str, Any] = {"story_assigned_version": row.version}
            if story_id is not None:
                values.update(story_id=story_id, duplicate_of=duplicate_of)
            conn.execute(update(a).where(a.c.article_id == row.article_id).values(**values))
        for story_id, first in started.items():
            members = [first, *joined.pop(story_id, [])]
            sources = list(dict.fromkeys(r.source for r in members if r.source))
            conn.execute(s.insert().values(
                story_id=story_id, title=first.title, first_seen_at=min(r.at for r in members),
                last_seen_at=max(r.at for r in members), article_count=len(members),
                sources=sources, centroid=None, updated_at=now))
        for story_id, rows in joined.items():
            current = conn.execute(select(s).where(s.c.story_id == story_id)).mappings().one()
            sources = list(dict.fromkeys([*(current["sources"] or []),
                                          *(r.source for r in rows if r.source)]))
            times = [t for t in (current["first_seen_at"], current["last_seen_at"]) if t]
            times += [r.at for r in rows]
            conn.execute(update(s).where(s.c.story_id == story_id).values(
                article_count=current["article_count"] + len(rows), sources=sources,
                first_seen_at=min(times), last_seen_at=max(times), updated_at=now))


def unassigned_english_articles(store: Records) -> list[str]:
    """English articles with no story yet: the ones the English pass will place now."""
    a = schema.articles
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(
            select(a.c.article_id).where(a.c.version > 0, a.c.story_id.is_(None),
                                         english_condition(a.c.language)))]


def placements(store: Records, article_ids: Sequence[str]) -> tuple[dict[str, str], list[Row]]:
    """The story each of these articles is in, and those stories' spans (id, first, last)."""
    a, s = schema.articles, schema.stories
    with store.engine.connect() as conn:
        placed: dict[str, str] = {}
        for start in range(0, len(article_ids), 500):
            placed.update({r.article_id: r.story_id for r in conn.execute(
                select(a.c.article_id, a.c.story_id)
                .where(a.c.article_id.in_(article_ids[start:start + 500]))
                .where(a.c.story_id.is_not(None)))})
        story_ids = sorted(set(placed.values()))
        spans = [r for start in range(0, len(story_ids), 500) for r in conn.execute(
            select(s.c.story_id, s.c.first_seen_at, s.c.last_seen_at)
            .where(s.c.story_id.in_(story_ids[start:start + 500])))]
    return placed, spans


def merge_stories(store: Records, drop: str, keep: str) -> None:
    """Move every article of story ``drop`` into ``keep`` and fold its record in: counts and
    spans add up, the English title and the English centroid win (the English pass reads it);
    ``drop`` stays as a pointer to ``keep`` (:func:`resolve_story_id`)."""
    a, s = schema.articles, schema.stories
    with store.engine.begin() as conn:
        rows = {r["story_id"]: r for r in conn.execute(
            select(s).where(s.c.story_id.in_([drop, keep]))).mappings()}
        old, into = rows[drop], rows[keep]
        english_title = conn.execute(
            select(a.c.title).where(a.c.story_id.in_([drop, keep]),
                                    english_condition(a.c.language), a.c.title.is_not(None))
            .order_by(_when(), a.c.article_id).limit(1)).scalar()
        firsts = [t for t in (old["first_seen_at"], into["first_seen_at"]) if t]
        lasts = [t for t in (old["last_seen_at"], into["last_seen_at"]) if t]
        conn.execute(update(s).where(s.c.story_id == keep).values(
            title=english_title or into["title"] or old["title"],
            first_seen_at=min(firsts) if firsts else None,
            last_seen_at=max(lasts) if lasts else None,
            article_count=into["article_count"] + old["article_count"],
            sources=list(dict.fromkeys([*(into["sources"] or []), *(old["sources"] or [])])),
            centroid=into["centroid"] or old["centroid"], updated_at=utcnow()))
        _fold(conn, drop, keep)  # the dropped id keeps resolving (links in alerts)


# ---- `newswatch cluster`: a throwaway store -----------------------------------------------------

def insert_extracted(store: Records, articles: Iterable[dict[str, Any]]) -> None:
    """Record already-extracted articles as version 1 (each dict: the article's columns), in
    one transaction of executemany statements (one per shape of dict)."""
    articles = list(articles)
    if not articles:
        return
    versions = [{"article_id": article["article_id"], "version": 1,
                 "content_hash": article["content_hash"], "title": article["title"],
                 "text": article["text"], "seen_at": article["updated_at"]}
                for article in articles]
    with store.engine.begin() as conn:
        for rows in by_columns(articles):
            conn.execute(schema.articles.insert(), rows)
        conn.execute(schema.article_versions.insert(), versions)


def story_of_each_article(store: Records) -> dict[str, Row]:
    """Every article's ``story_id`` and ``duplicate_of``, by article id."""
    a = schema.articles
    with store.engine.connect() as conn:
        return {r.article_id: r for r in conn.execute(
            select(a.c.article_id, a.c.story_id, a.c.duplicate_of))}


# ---- reading ----------------------------------------------------------------------------------

def list_stories(store: Records, since: datetime | None = None, query: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
    """Stories, most recently active first (largest first among equals)."""
    s = schema.stories
    stmt = select(s.c.story_id, s.c.title, s.c.first_seen_at, s.c.last_seen_at,
                  s.c.article_count, s.c.sources).where(s.c.merged_into.is_(None))
    if since is not None:
        stmt = stmt.where(s.c.last_seen_at >= since)
    if query:
        stmt = stmt.where(func.lower(s.c.title).contains(query.lower()))
    stmt = stmt.order_by(s.c.article_count.desc(), s.c.last_seen_at.desc()).limit(limit)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    folded = merged_into_each(store, [r["story_id"] for r in rows])
    for row in rows:  # what consolidation folded in: the ids earlier alerts may name
        row["merged_from"] = folded.get(row["story_id"], [])
    return rows


def recent_stories(store: Records, since: datetime) -> list[dict[str, Any]]:
    """Stories that gained articles recently, in processing time (the story stage stamps
    ``updated_at``) or in publication time: a backlog read today is news today."""
    s = schema.stories
    published = func.coalesce(s.c.last_seen_at, s.c.first_seen_at)
    with store.engine.connect() as conn:
        rows = conn.execute(select(s.c.story_id, s.c.title, s.c.first_seen_at,
                                   s.c.last_seen_at, s.c.article_count)
                            .where(or_(s.c.updated_at >= since, published >= since))
                            .where(s.c.merged_into.is_(None))
                            .order_by(s.c.story_id)).mappings().all()
    return [dict(r) for r in rows]


def stories_by_id(store: Records, story_ids: Sequence[str],
                  columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """These stories' ``columns`` (``story_id`` among them), by id."""
    s = schema.stories
    ids = [i for i in story_ids if i]
    found: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            for row in conn.execute(select(*(s.c[c] for c in columns))
                                    .where(s.c.story_id.in_(ids[start:start + 500]))
                                    .order_by(s.c.story_id)).mappings():
                found[row["story_id"]] = dict(row)
    return found


def story_and_articles(store: Records, story_id: str
                       ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A story's row (None if gone) and its articles, oldest first; a story consolidation
    folded into another answers with that story (its row says so in ``merged_from``)."""
    s, a = schema.stories, schema.articles
    story_id = resolve_story_id(store, story_id) or story_id
    with store.engine.connect() as conn:
        row = conn.execute(select(s).where(s.c.story_id == story_id)).mappings().first()
        articles = conn.execute(
            select(a.c.article_id, a.c.title, a.c.entry_title, a.c.source, a.c.url, a.c.link,
                   a.c.published_at, a.c.first_seen_at, a.c.duplicate_of)
            .where(a.c.story_id == story_id)
            .order_by(_when(), a.c.article_id)
        ).mappings().all()
    story = dict(row) if row is not None else None
    if story is not None:
        story["merged_from"] = merged_into_each(store, [story_id]).get(story_id, [])
    return story, [dict(r) for r in articles]
