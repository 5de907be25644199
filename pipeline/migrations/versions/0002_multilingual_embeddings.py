"""Multilingual embeddings beside the MiniLM ones (cross-lingual stories, issue 18).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "multilingual_embeddings" in sa.inspect(op.get_bind()).get_table_names():
        return  # made by an older create_all
    op.create_table(
        "multilingual_embeddings",
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.article_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("multilingual_embeddings")
