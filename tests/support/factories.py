"""Shared test factories: settings variants and record-store rows (fictional data only).

The row factories are the one place in the tests that build SQL rows by hand; each writes
through ``store.engine`` in its own transaction, so call them outside any open one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline import schema
from pipeline.records import Store, utcnow
from pipeline.settings import Settings


def with_alerts(settings: Settings, **alerts: Any) -> Settings:
    """A copy of ``settings`` with some ``alerts.*`` settings changed (validated)."""
    changed = settings.alerts.model_validate({**settings.alerts.model_dump(), **alerts})
    return settings.model_copy(update={"alerts": changed})


def add_article(store: Store, article_id: str, *, title: str, text: str,
                source: str | None = None, published_at: datetime | None = None,
                seen_at: datetime | None = None,
                content_hash: str | None = None, story_id: str | None = None,
                version: int = 1, with_version_row: bool = False, **fields: Any) -> None:
    """An extracted article (status "ok"); other columns (url, link, language...) go in
    ``fields``. Defaults: url made from the id (``url=None``: none), content_hash ``h-<id>``,
    first_seen_at/updated_at ``seen_at``, else ``published_at``, else now.
    ``with_version_row`` also stores its article_versions row (see add_version)."""
    seen = seen_at or published_at or utcnow()
    fields.setdefault("url", f"https://news.example/{article_id}")
    digest = content_hash if content_hash is not None else f"h-{article_id}"
    with store.engine.begin() as conn:
        conn.execute(schema.articles.insert().values(
            article_id=article_id, source=source, title=title, text=text,
            published_at=published_at, content_hash=digest, version=version, extraction_status="ok",
            first_seen_at=seen, updated_at=seen, story_id=story_id, **fields))
    if with_version_row:
        add_version(store, article_id, title=title, text=text, seen_at=seen,
                    version=version, content_hash=digest)


def add_version(store: Store, article_id: str, *, title: str, text: str, seen_at: datetime,
                version: int = 1, content_hash: str | None = None,
                embedding: bytes | None = None, **fields: Any) -> None:
    """One article_versions row (``content_hash`` defaults to ``h-<id>``, as add_article's)."""
    digest = content_hash if content_hash is not None else f"h-{article_id}"
    with store.engine.begin() as conn:
        conn.execute(schema.article_versions.insert().values(
            article_id=article_id, version=version, content_hash=digest, title=title,
            text=text, seen_at=seen_at, embedding=embedding, **fields))


def add_story(store: Store, story_id: str, *, title: str, at: datetime, sources: list[str],
              article_count: int = 1, **fields: Any) -> None:
    """A story first and last seen (and updated) ``at``; other columns go in ``fields``."""
    with store.engine.begin() as conn:
        conn.execute(schema.stories.insert().values(
            story_id=story_id, title=title, first_seen_at=at, last_seen_at=at,
            article_count=article_count, sources=sources, updated_at=at, **fields))


def add_alert(store: Store, *, watch: str, story_id: str, kind: str = "new",
              window_key: str = "once", status: str = "sent", at: datetime | None = None,
              **fields: Any) -> int:
    """An alert ledger row created and updated ``at`` (default now); returns its alert_id."""
    when = at or utcnow()
    with store.engine.begin() as conn:
        result = conn.execute(schema.alerts.insert().values(
            watch=watch, story_id=story_id, kind=kind, window_key=window_key, status=status,
            created_at=when, updated_at=when, **fields))
    return int(result.inserted_primary_key[0])
