"""Resilience: the agent registry, shared circuit breakers, health samples and system events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``agents``, ``breakers``, ``agent_samples`` and ``system_events``."""
    op.create_table(
        "agents",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("healthy", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("health_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_agents"),
    )
    op.create_table(
        "breakers",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("policy", _JSON, nullable=False),
        sa.Column("failures", _JSON, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trials_admitted", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("trial_successes", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("trial_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", _JSON, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_breakers"),
    )
    op.create_table(
        "agent_samples",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_samples"),
    )
    op.create_index("ix_agent_samples_agent_ts", "agent_samples", ["agent", "ts"])
    op.create_table(
        "system_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("data", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_system_events"),
    )
    op.create_index("ix_system_events_type_id", "system_events", ["type", "id"])


def downgrade() -> None:
    op.drop_index("ix_system_events_type_id", table_name="system_events")
    op.drop_table("system_events")
    op.drop_index("ix_agent_samples_agent_ts", table_name="agent_samples")
    op.drop_table("agent_samples")
    op.drop_table("breakers")
    op.drop_table("agents")
