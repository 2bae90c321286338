"""Event publishers read only unfinished and recently finished runs: ``publish_watermarks``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``publish_watermarks``."""
    op.create_table(
        "publish_watermarks",
        sa.Column("publisher", sa.String(200), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("publisher", name="pk_publish_watermarks"),
    )


def downgrade() -> None:
    op.drop_table("publish_watermarks")
