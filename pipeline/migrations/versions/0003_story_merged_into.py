"""Stories folded into another keep their row with a pointer to it (issue 12).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("stories")}
    if "merged_into" not in columns:  # made by an older create_all otherwise
        with op.batch_alter_table("stories") as batch:
            batch.add_column(sa.Column("merged_into", sa.String(length=32), nullable=True))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("stories")}
    if "ix_stories_merged_into" not in indexes:
        op.create_index("ix_stories_merged_into", "stories", ["merged_into"])


def downgrade() -> None:
    op.drop_index("ix_stories_merged_into", table_name="stories")
    with op.batch_alter_table("stories") as batch:
        batch.drop_column("merged_into")
