"""The record schema as first released (feeds, articles, stories, runs, alert ledger).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Also adopts a database created by ``metadata.create_all`` before migrations existed: tables
that are already there are kept (after checking they have every column), missing ones (for
example the alert tables, which older code created only when alerts first ran) are created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _metadata() -> sa.MetaData:
    """The schema of this revision, frozen here: later edits of pipeline/schema.py must not
    change what 0001 creates."""
    md = sa.MetaData()
    sa.Table(
        "newswatch_meta", md,
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    sa.Table(
        "feeds", md,
        sa.Column("feed_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("dead", sa.Boolean(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("ttl_s", sa.Float(), nullable=True),
        sa.Column("next_fetch_at", TZ, nullable=True),
        sa.Column("last_fetched_at", TZ, nullable=True),
        sa.Column("last_success_at", TZ, nullable=True),
        sa.Column("last_outcome", sa.String(length=32), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("fetch_count", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("feed_id"),
        sa.UniqueConstraint("url"),
    )
    sa.Table(
        "feed_outcomes", md,
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["feed_id"], ["feeds.feed_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("feed_id", "outcome"),
    )
    sa.Table(
        "runs", md,
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    sa.Table(
        "run_outcomes", md,
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=48), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "stage", "outcome"),
    )
    sa.Table(
        "articles", md,
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("guid", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_source", sa.String(length=8), nullable=True),
        sa.Column("authors", sa.JSON(), nullable=True),
        sa.Column("published_at", TZ, nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entry_title", sa.Text(), nullable=True),
        sa.Column("entry_summary", sa.Text(), nullable=True),
        sa.Column("entry_fingerprint", sa.String(length=32), nullable=True),
        sa.Column("extraction_status", sa.String(length=16), nullable=False),
        sa.Column("extraction_outcome", sa.String(length=32), nullable=True),
        sa.Column("extraction_attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("extracted_at", TZ, nullable=True),
        sa.Column("story_id", sa.String(length=32), nullable=True),
        sa.Column("duplicate_of", sa.String(length=32), nullable=True),
        sa.Column("story_assigned_version", sa.Integer(), nullable=True),
        sa.Column("indexed_fingerprint", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("article_id"),
    )
    sa.Table(
        "article_versions", md,
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_source", sa.String(length=8), nullable=True),
        sa.Column("seen_at", TZ, nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["article_id"], ["articles.article_id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "version"),
    )
    sa.Table(
        "article_feeds", md,
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.article_id"],
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["feed_id"], ["feeds.feed_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "feed_id"),
    )
    sa.Table(
        "stories", md,
        sa.Column("story_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("first_seen_at", TZ, nullable=True),
        sa.Column("last_seen_at", TZ, nullable=True),
        sa.Column("article_count", sa.Integer(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=True),
        sa.Column("centroid", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("story_id"),
    )
    sa.Table(
        "article_watch_scores", md,
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("watch", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=40), nullable=False),
        sa.Column("watch_fingerprint", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("relevant", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("scored_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("article_id", "watch"),
    )
    sa.Table(
        "alerts", md,
        sa.Column("alert_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("watch", sa.String(length=128), nullable=False),
        sa.Column("story_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("window_key", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("basis", sa.JSON(), nullable=True),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("alert_id"),
        sa.UniqueConstraint("watch", "story_id", "kind", "window_key",
                            name="uq_alerts_event"),
    )
    sa.Table(
        "alert_deliveries", md,
        sa.Column("delivery_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", TZ, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.alert_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id"),
        sa.UniqueConstraint("alert_id", "channel", name="uq_alert_deliveries_channel"),
    )
    for name, table, columns in (
        ("ix_articles_status", "articles", ("extraction_status",)),
        ("ix_articles_published", "articles", ("published_at",)),
        ("ix_articles_story", "articles", ("story_id",)),
        ("ix_stories_last_seen", "stories", ("last_seen_at",)),
        ("ix_alerts_watch_story", "alerts", ("watch", "story_id")),
        ("ix_alerts_created", "alerts", ("created_at",)),
        ("ix_alerts_digest", "alerts", ("digest_id",)),
        ("ix_alert_deliveries_due", "alert_deliveries", ("status", "next_attempt_at")),
    ):
        sa.Index(name, *(md.tables[table].c[c] for c in columns))
    return md


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in _metadata().sorted_tables:
        if table.name not in existing:
            table.create(bind)  # with its indexes
            continue
        missing = {c.name for c in table.columns} - {
            c["name"] for c in inspector.get_columns(table.name)}
        if missing:
            raise RuntimeError(
                f"records table {table.name!r} lacks columns {sorted(missing)}: it was not "
                "created by newswatch; restore it or start from an empty database")
    meta = sa.table("newswatch_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    if bind.execute(sa.select(meta.c.key).where(meta.c.key == "schema_version")).first() is None:
        op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    _metadata().drop_all(op.get_bind())
