"""The records that flow between pipeline stages (one Entry model, as in Miniflux)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class FeedEntry:
    """One item of a parsed feed, whatever its format (RSS, Atom, JSON Feed)."""

    link: str | None
    guid: str | None
    title: str
    summary: str  # plain text
    content: str  # plain text of the entry's full content, when the feed carries it
    published_at: datetime | None
    updated_at: datetime | None
    authors: list[str] = field(default_factory=list)
    language: str | None = None


@dataclass(slots=True)
class ParsedFeed:
    title: str | None
    entries: list[FeedEntry]
    ttl_s: float | None = None  # RSS <ttl>, a minimum refetch interval
    bozo_reason: str | None = None  # feedparser's complaint on a feed it could still read
    implausible_dates: int = 0  # entries whose impossible dates were dropped (sanitize)


@dataclass(slots=True)
class ExtractedArticle:
    """What an extractor read from an article page."""

    title: str | None
    text: str
    authors: list[str]
    published_at: datetime | None
    language: str | None
    engine: str
