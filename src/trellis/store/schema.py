"""The Trellis tables, as SQLAlchemy Core ``Table`` objects on one :data:`metadata`.

This module is the reference the repositories query against. The database itself is created by
the Alembic migrations in ``trellis/store/migrations/versions`` (which are frozen snapshots and do
not import this module); ``tests/test_store_migrations.py`` checks the two agree.

LangGraph's checkpoints are *not* here: they live in the checkpointer's own tables (a separate
file on SQLite), see :mod:`trellis.store.checkpointer`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
"""All Trellis tables. Constraint names follow the naming convention so migrations can name them."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type: SQLAlchemy stores a
    fixed-width ISO string (which sorts correctly) and drops the offset, so values are converted
    to UTC on the way in and marked UTC on the way out. Naive datetimes are refused rather than
    guessed at: ``datetime.now()`` without a zone is a bug, not a timestamp.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: Trellis stores timezone-aware UTC timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL; Python ``None`` is stored as SQL ``NULL``."""

# SQLite only makes an INTEGER PRIMARY KEY an auto-incrementing rowid alias.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

workflows = Table(
    "workflows",
    metadata,
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("hash", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("definition", JSONDocument, nullable=True),
    Column("source", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    UniqueConstraint("name", "hash"),
)
"""Registered workflow versions. Immutable: rows are inserted, never updated."""

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("hash", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", JSONDocument, nullable=True),
    Column("output", JSONDocument, nullable=True),
    Column("error", JSONDocument, nullable=True),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("options", JSONDocument, nullable=True),
    Column("parked", JSONDocument, nullable=True),
    Column("wake_at", UTCDateTime, nullable=True),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("request_hash", String(128), nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_token", BigInteger, nullable=False, server_default=text("0")),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["workflow", "version"], ["workflows.name", "workflows.version"]),
    Index("ix_runs_workflow_created", "workflow", "created_at"),
    Index("ix_runs_created", "created_at", "id"),
    Index("ix_runs_wake_at", "wake_at"),
)
"""One row per run: what it runs, where it is, what it waits for, who holds its lease."""

# The queue picks the highest priority, then the oldest, among runs of one status.
Index("ix_runs_queue", runs.c.status, runs.c.priority.desc(), runs.c.created_at)
# Expired leases are found by status and expiry.
Index("ix_runs_status_lease_expires_at", runs.c.status, runs.c.lease_expires_at)

node_states = Table(
    "node_states",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("node", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("error", JSONDocument, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("data", JSONDocument, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "node"),
)
"""The latest state of each node of each run (history lives in ``events``)."""

events = Table(
    "events",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("node", String(200), nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("data", JSONDocument, nullable=True),
    PrimaryKeyConstraint("run_id", "seq"),
)
"""The event log of each run; ``seq`` is gapless and monotonic per run (from ``runs.last_seq``)."""

commands = Table(
    "commands",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSONDocument, nullable=True),
    Column("actor", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("consumed_at", UTCDateTime, nullable=True),
    Index("ix_commands_run_id_consumed_at", "run_id", "consumed_at"),
)
"""User requests (cancel, pause, approve, ...) waiting for the process that holds the run."""

__all__ = [
    "JSONDocument",
    "UTCDateTime",
    "agent_samples",
    "agents",
    "breakers",
    "callbacks",
    "commands",
    "deliveries",
    "events",
    "metadata",
    "node_states",
    "publish_cursors",
    "publish_watermarks",
    "runs",
    "system_events",
    "trigger_leases",
    "triggers",
    "workflows",
]

workers = Table(
    "workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("running", Integer, nullable=False, server_default=text("0")),
    Column("draining", Boolean, nullable=False, server_default=false()),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Index("ix_workers_heartbeat_at", "heartbeat_at"),
)
"""One row per worker process: how many runs it may and does execute, and when it last beat."""

# -- access (API keys and the audit log; migration 0003) -------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_api_keys_name", "name"),
)
"""API keys: a public ``id`` (the key's prefix), a role, and an HMAC of the secret, never the secret."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(16), nullable=True),
    Column("method", String(10), nullable=False),
    Column("path", String(2000), nullable=False),
    Column("run_id", String(36), nullable=True),
    Column("status", Integer, nullable=False),
    Index("ix_audit_log_ts", "ts"),
    Index("ix_audit_log_run_id", "run_id"),
)
"""Every mutating API call: who (key name), as what role, what, on which run, and the answer's status.

``run_id`` has no foreign key on purpose: the record outlives a deleted run.
"""

# -- resilience (agents, breakers, health samples, system events; migration 0004) ----------------

agents = Table(
    "agents",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("spec", JSONDocument, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("healthy", Boolean, nullable=False, server_default=true()),
    Column("health_changed_at", UTCDateTime, nullable=True),
    Column("last_probe_at", UTCDateTime, nullable=True),
    Column("revision", Integer, nullable=False, server_default=text("1")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""Registered agents: the spec document (URL, paths, policies, secret *reference*), whether it is
enabled, and its health as the monitor last judged it. ``revision`` counts updates."""

breakers = Table(
    "breakers",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("policy", JSONDocument, nullable=False),
    Column("failures", JSONDocument, nullable=False),
    Column("opened_at", UTCDateTime, nullable=True),
    Column("trials_admitted", Integer, nullable=False, server_default=text("0")),
    Column("trial_successes", Integer, nullable=False, server_default=text("0")),
    Column("trial_started_at", UTCDateTime, nullable=True),
    Column("generation", Integer, nullable=False, server_default=text("0")),
    Column("last_error", JSONDocument, nullable=True),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""One circuit breaker per key (``agent:<name>``, ``http:<host:port>``), shared by every process.

``failures`` holds the epoch seconds of the recent failures that count towards opening;
``generation`` increases with every transition, so an outcome reported for an earlier episode
(a half-open trial admitted before the circuit re-opened) changes nothing.
"""

agent_samples = Table(
    "agent_samples",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("agent", String(200), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("source", String(8), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("error", String(200), nullable=True),
    Index("ix_agent_samples_agent_ts", "agent", "ts"),
)
"""Outcomes of health probes (``source = probe``) and real calls (``call``), for rolling health."""

system_events = Table(
    "system_events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("data", JSONDocument, nullable=True),
    Index("ix_system_events_type_id", "type", "id"),
)
"""Events that belong to no single run: ``breaker.*`` (subject: breaker key) and ``agent.*``
(subject: agent name)."""

# -- observability (revision 0005; statements in trellis.store._observability) -------------------

run_logs = Table(
    "run_logs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("level", String(10), nullable=False),
    Column("node", String(200), nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("logger", String(200), nullable=True),
    Column("message", Text, nullable=False),
    Column("data", JSONDocument, nullable=True),
    Index("ix_run_logs_run_id_id", "run_id", "id"),
)
"""Log lines a run's nodes emitted (``ctx.log``, Python ``logging`` inside a node), oldest first."""

Index("ix_runs_finished_at", runs.c.finished_at)
"""Retention (``trellis gc``) looks for runs that finished before a horizon."""

# -- triggers (schedules, webhooks in, bus consumers), callbacks and publishers; migration 0006 --

triggers = Table(
    "triggers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("workflow", String(220), nullable=False),
    Column("spec", JSONDocument, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("last_fire_at", UTCDateTime, nullable=True),
    Column("last_run_id", String(36), nullable=True),
    Column("last_error", JSONDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_triggers_kind_next_fire_at", "kind", "next_fire_at"),
)
"""What starts runs besides ``POST /v1/runs``: ``schedule``, ``webhook``, ``nats``, ``redis``.

``origin`` says who owns the row (``api``, ``config``: ``trellis.toml``, ``workflow``: a
definition's ``schedules``). ``next_fire_at`` is a schedule's next due tick; the scheduler
advances it by compare-and-set after the tick's run exists."""

trigger_leases = Table(
    "trigger_leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
"""Which process does a cluster-wide single job (``dispatcher``, ``publisher:<name>``) until when."""

callbacks = Table(
    "callbacks",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret", String(500), nullable=True),
    Column("events", Boolean, nullable=False, server_default=false()),
    Column("delivered_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""A run's callback URL and how far its deliveries got: every event up to ``delivered_seq`` is
handled (delivered, or given up on after the last attempt); ``attempts`` counts failures of the
next one, retried at ``next_attempt_at``."""

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("ts", UTCDateTime, nullable=False),
    Index("ix_deliveries_run_id_id", "run_id", "id"),
)
"""Every attempt to POST a run's document (``kind = run``) or one of its events (``event``) to
its callback URL, successful or not."""

publish_cursors = Table(
    "publish_cursors",
    metadata,
    Column("publisher", String(200), nullable=False),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("publisher", "run_id"),
)
"""How far each event publisher got in each run's event log (``seq`` published, inclusive)."""

publish_watermarks = Table(
    "publish_watermarks",
    metadata,
    Column("publisher", String(200), nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("publisher"),
)
"""Per event publisher: every run it has not published in full is unfinished or finished at or
after ``since``, so a pass reads only those (``ix_runs_queue``, ``ix_runs_finished_at``), not the
whole table. Migration 0007."""
