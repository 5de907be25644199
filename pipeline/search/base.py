"""The search contract: one interface, one result shape, every backend.

Backends (SQLite FTS5 by default, Elasticsearch at scale) index :class:`SearchDocument` built
from the SQL records and answer :class:`SearchQuery` with :class:`SearchResults`. The index is
always rebuildable from the records (``newswatch reindex``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

SearchMode = Literal["keyword", "semantic", "hybrid"]


class SearchUnavailable(Exception):
    """The search backend cannot be reached; records are safe and indexing catches up later."""


@dataclass(slots=True)
class SearchDocument:
    article_id: str
    title: str
    text: str
    url: str | None
    source: str | None
    published_at: datetime | None
    language: str | None = None
    story_id: str | None = None
    content_hash: str | None = None
    feeds: list[str] = field(default_factory=list)
    embedding: list[float] | None = None

    @classmethod
    def from_article(cls, article: dict[str, Any], embedding: list[float] | None = None,
                     feeds: list[str] | None = None) -> SearchDocument:
        return cls(
            article_id=article["article_id"],
            title=article.get("title") or article.get("entry_title") or "",
            text=article.get("text") or "",
            url=article.get("url") or article.get("link"),
            source=article.get("source"),
            published_at=article.get("published_at") or article.get("first_seen_at"),
            language=article.get("language"),
            story_id=article.get("story_id"),
            content_hash=article.get("content_hash"),
            feeds=feeds or [],
            embedding=embedding,
        )


@dataclass(slots=True)
class SearchQuery:
    text: str
    since: datetime | None = None
    until: datetime | None = None
    sources: list[str] = field(default_factory=list)
    story_id: str | None = None
    limit: int = 20
    mode: SearchMode = "keyword"
    by_story: bool = False
    # Query embedding for semantic/hybrid modes (computed by the caller, who owns the model).
    vector: list[float] | None = None


@dataclass(slots=True)
class SearchHit:
    article_id: str
    title: str
    url: str | None
    source: str | None
    published_at: datetime | None
    snippet: str  # plain text; matched terms wrapped in [[ ]] (render-safe: escape, then mark)
    score: float
    story_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "article_id": self.article_id,
            "title": self.title,
            "url": self.url,
            "source": self.source,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "snippet": self.snippet,
            "score": round(self.score, 6),
            "story_id": self.story_id,
        }


@dataclass(slots=True)
class StoryGroup:
    story_id: str | None
    hits: list[SearchHit]

    def to_json(self) -> dict[str, Any]:
        return {"story_id": self.story_id, "hits": [h.to_json() for h in self.hits]}


@dataclass(slots=True)
class SearchResults:
    hits: list[SearchHit]
    total: int
    groups: list[StoryGroup] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": self.total, "hits": [h.to_json() for h in self.hits]}
        if self.groups is not None:
            out["groups"] = [g.to_json() for g in self.groups]
        return out


@runtime_checkable
class SearchBackend(Protocol):
    """What every search backend provides."""

    name: str

    def ensure_ready(self) -> None:
        """Create indexes/tables on first use; raise SearchUnavailable if unreachable."""

    def index(self, documents: list[SearchDocument]) -> int:
        """Insert or replace documents by ``article_id``; idempotent. Returns count indexed."""

    def delete(self, article_ids: list[str]) -> None: ...

    def search(self, query: SearchQuery) -> SearchResults: ...

    def count(self) -> int: ...

    def clear(self) -> None:
        """Drop every document (used by a full re-index)."""

    def close(self) -> None: ...


def group_by_story(hits: list[SearchHit]) -> list[StoryGroup]:
    """Group hits by story, keeping rank order of each story's best hit."""
    groups: dict[str, StoryGroup] = {}
    for hit in hits:
        key = hit.story_id or f"article:{hit.article_id}"
        if key not in groups:
            groups[key] = StoryGroup(story_id=hit.story_id, hits=[])
        groups[key].hits.append(hit)
    return list(groups.values())


_RELATIVE = re.compile(r"^(\d+)\s*([hdwm])$")


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``2w``, ``1m`` (30 days) or an ISO date/datetime → aware UTC datetime."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.lower())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        hours = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 30}[unit]
        return now - timedelta(hours=amount * hours)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"not a date or duration: {value!r} (use e.g. 7d, 12h or 2023-06-18)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
