"""The SQL schema of the record store (portable: SQLite and PostgreSQL).

Records are the source of truth; search indexes are rebuilt from them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

SCHEMA_VERSION = 1


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

meta = Table(
    "newswatch_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

feeds = Table(
    "feeds",
    metadata,
    Column("feed_id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("source", Text),  # the outlet, shared by several feeds of one publisher
    Column("title", Text),  # as the feed itself calls it
    Column("enabled", Boolean, nullable=False, default=True),
    Column("dead", Boolean, nullable=False, default=False),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("ttl_s", Float),  # minimum interval from Cache-Control max-age / RSS <ttl>
    Column("next_fetch_at", UTCDateTime),  # not before this (backoff, Retry-After, ttl)
    Column("last_fetched_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_outcome", String(32)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("fetch_count", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
)

# Cumulative outcome counters per feed ("why was this feed / article dropped?").
feed_outcomes = Table(
    "feed_outcomes",
    metadata,
    Column("feed_id", Integer, ForeignKey("feeds.feed_id", ondelete="CASCADE"), primary_key=True),
    Column("outcome", String(32), primary_key=True),
    Column("count", Integer, nullable=False, default=0),
    Column("last_at", UTCDateTime),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False, default="running"),
    Column("summary", JSON),
)

# Per-run outcome counters for every stage: (run, stage, outcome) -> count.
run_outcomes = Table(
    "run_outcomes",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("outcome", String(48), primary_key=True),
    Column("count", Integer, nullable=False, default=0),
)

articles = Table(
    "articles",
    metadata,
    Column("article_id", String(32), primary_key=True),
    Column("url", Text),  # canonical
    Column("link", Text),  # as first seen in a feed
    Column("guid", Text),
    Column("source", Text),  # outlet / feed name shown to users
    Column("title", Text),
    Column("text", Text, nullable=False, default=""),
    Column("text_source", String(8)),  # "page", "feed" (its summary) or "title" (headline only)
    Column("authors", JSON),
    Column("published_at", UTCDateTime),
    Column("language", String(16)),
    Column("content_hash", String(32)),
    Column("version", Integer, nullable=False, default=0),
    Column("entry_title", Text),
    Column("entry_summary", Text),
    Column("entry_fingerprint", String(32)),
    Column("extraction_status", String(16), nullable=False, default="pending"),
    Column("extraction_outcome", String(32)),
    Column("extraction_attempts", Integer, nullable=False, default=0),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("extracted_at", UTCDateTime),
    # Stories (filled by the story stage).
    Column("story_id", String(32)),
    Column("duplicate_of", String(32)),
    Column("story_assigned_version", Integer),
    # Search indexing: what the index last received (catch-up after an outage).
    Column("indexed_fingerprint", String(40)),
)
Index("ix_articles_status", articles.c.extraction_status)
Index("ix_articles_published", articles.c.published_at)
Index("ix_articles_story", articles.c.story_id)

article_versions = Table(
    "article_versions",
    metadata,
    Column("article_id", String(32), ForeignKey("articles.article_id", ondelete="CASCADE"),
           primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content_hash", String(32), nullable=False),
    Column("title", Text),
    Column("text", Text, nullable=False),
    Column("text_source", String(8)),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("embedding", LargeBinary),
    Column("embedding_model", Text),
)

# Multilingual embeddings (pipeline/crosslingual.py): one per article version, beside the
# MiniLM one in article_versions, so articles in different languages can be compared.
multilingual_embeddings = Table(
    "multilingual_embeddings",
    metadata,
    Column("article_id", String(32), ForeignKey("articles.article_id", ondelete="CASCADE"),
           primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("embedding", LargeBinary, nullable=False),
    Column("model", Text, nullable=False),
)

article_feeds = Table(
    "article_feeds",
    metadata,
    Column("article_id", String(32), ForeignKey("articles.article_id", ondelete="CASCADE"),
           primary_key=True),
    Column("feed_id", Integer, ForeignKey("feeds.feed_id", ondelete="CASCADE"), primary_key=True),
    Column("first_seen_at", UTCDateTime, nullable=False),
)

stories = Table(
    "stories",
    metadata,
    Column("story_id", String(32), primary_key=True),
    Column("title", Text),
    Column("first_seen_at", UTCDateTime),
    Column("last_seen_at", UTCDateTime),
    Column("article_count", Integer, nullable=False, default=0),
    Column("sources", JSON),
    Column("centroid", LargeBinary),
    Column("updated_at", UTCDateTime),
    # Set when consolidation folded this story into another (its articles moved there): the
    # id keeps resolving, so links in earlier alerts and searches by story id land there.
    Column("merged_into", String(32)),
)
Index("ix_stories_last_seen", stories.c.last_seen_at)
Index("ix_stories_merged_into", stories.c.merged_into)

# ---- alerts (pipeline/alerts): relevance cache and the exactly-once ledger ------------------

# Relevance of one article version to one watch; re-scored only when the text or the watch's
# matching settings change (docs/decisions.md, "Watches and alerts").
article_watch_scores = Table(
    "article_watch_scores",
    metadata,
    Column("article_id", String(32), primary_key=True),
    Column("watch", String(128), primary_key=True),
    Column("content_hash", String(40), nullable=False),
    Column("watch_fingerprint", String(32), nullable=False),
    Column("score", Float, nullable=False),
    Column("relevant", Boolean, nullable=False),
    Column("reasons", JSON),
    Column("scored_at", UTCDateTime, nullable=False),
)

# One row per alert decision: (watch, story, kind, window) is unique, so a rerun, a retry or
# a second worker can never create a second alert for the same event.
alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
    Column("watch", String(128), nullable=False),
    Column("story_id", String(32), nullable=False),  # "" for a digest
    Column("kind", String(16), nullable=False),  # new | update | digest
    Column("window_key", String(40), nullable=False),  # "once", a local date, or date@HH:MM
    Column("status", String(16), nullable=False),  # queued | pending | sent | failed
    Column("title", Text),
    Column("score", Float),
    Column("payload", JSON),  # the message as decided (AlertMessage), resent unchanged
    Column("basis", JSON),  # sources and article ids the alert covered (update baseline)
    Column("digest_id", Integer),  # the digest alert that carried this one
    Column("run_id", String(40)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    UniqueConstraint("watch", "story_id", "kind", "window_key", name="uq_alerts_event"),
)
Index("ix_alerts_watch_story", alerts.c.watch, alerts.c.story_id)
Index("ix_alerts_created", alerts.c.created_at)
Index("ix_alerts_digest", alerts.c.digest_id)

# Per-channel delivery state of an alert: a Slack failure never resends a delivered email.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("delivery_id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, ForeignKey("alerts.alert_id", ondelete="CASCADE"),
           nullable=False),
    Column("channel", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sending | sent | failed | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("claimed_by", String(64)),
    Column("claimed_at", UTCDateTime),
    Column("version", Integer, nullable=False, default=0),  # bumped by every claim/mark
    Column("via", String(16)),  # single | rollup | digest
    Column("last_error", Text),  # redacted
    Column("sent_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("alert_id", "channel", name="uq_alert_deliveries_channel"),
)
Index("ix_alert_deliveries_due", alert_deliveries.c.status, alert_deliveries.c.next_attempt_at)

__all__ = [
    "SCHEMA_VERSION",
    "UniqueConstraint",
    "alert_deliveries",
    "alerts",
    "article_feeds",
    "article_versions",
    "article_watch_scores",
    "articles",
    "feed_outcomes",
    "feeds",
    "meta",
    "metadata",
    "run_outcomes",
    "runs",
    "stories",
]
