"""Initial schema: workflows, runs, node_states, events, commands.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the five Trellis tables and their indexes."""
    op.create_table(
        "workflows",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("definition", _json(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_workflows"),
        sa.UniqueConstraint("name", "hash", name="uq_workflows_name_hash"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("options", _json(), nullable=True),
        sa.Column("parked", _json(), nullable=True),
        sa.Column("wake_at", _ts(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(128), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_token", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_expires_at", _ts(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("idempotency_key", name="uq_runs_idempotency_key"),
        sa.ForeignKeyConstraint(
            ["workflow", "version"],
            ["workflows.name", "workflows.version"],
            name="fk_runs_workflow_workflows",
        ),
    )
    op.create_index("ix_runs_queue", "runs", ["status", sa.text("priority DESC"), "created_at"])
    op.create_index("ix_runs_workflow_created", "runs", ["workflow", "created_at"])
    op.create_index("ix_runs_created", "runs", ["created_at", "id"])
    op.create_index("ix_runs_wake_at", "runs", ["wake_at"])
    op.create_table(
        "node_states",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("next_attempt_at", _ts(), nullable=True),
        sa.Column("data", _json(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "node", name="pk_node_states"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_node_states_run_id_runs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "events",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", _ts(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("data", _json(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_events"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_events_run_id_runs", ondelete="CASCADE"),
    )
    op.create_table(
        "commands",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", _json(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("consumed_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_commands_run_id_runs", ondelete="CASCADE"),
    )
    op.create_index("ix_commands_run_id_consumed_at", "commands", ["run_id", "consumed_at"])


def downgrade() -> None:
    """Drop every Trellis table (LangGraph's checkpoint tables are not touched)."""
    op.drop_table("commands")
    op.drop_table("events")
    op.drop_table("node_states")
    op.drop_table("runs")
    op.drop_table("workflows")
