"""Triggers: statements over ``triggers``, ``trigger_leases``, ``callbacks``, ``deliveries`` and
``publish_cursors``.

Functions here run on a connection whose transaction the caller (:class:`~trellis.store.Store`)
owns. What a trigger *does* lives in :mod:`trellis.triggers`; this module only keeps its rows:

* a schedule's due tick is advanced by compare-and-set (:func:`advance_schedule`), after the
  tick's run was created under an idempotency key, so two schedulers never both advance it and
  a crash between the two leaves the tick due (its run is then found by its key, not duplicated);
* a *lease* (:func:`take_lease`) names the one process that does a cluster-wide job;
* a callback's progress is the event ``seq`` up to which its run's events were handled;
* a publisher's progress is one cursor row per (publisher, run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from trellis.store._dialect import Dialect, point
from trellis.store.records import iso
from trellis.store.schema import (
    callbacks,
    deliveries,
    publish_cursors,
    publish_watermarks,
    runs,
    trigger_leases,
    triggers,
)
from trellis.types import RunStatus

# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One trigger as stored."""

    name: str
    kind: str
    """``schedule``, ``webhook``, ``nats`` or ``redis``."""
    workflow: str
    """``name`` (latest version at each start) or ``name@version``."""
    spec: Mapping[str, Any]
    """The kind's settings (cron and time zone, input mapping, secret *reference*, subject ...)."""
    origin: str
    """``api``, ``config`` (``trellis.toml``) or ``workflow`` (a definition's ``schedules``)."""
    enabled: bool
    """False while paused."""
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_run_id: str | None
    last_error: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "workflow": self.workflow,
            "spec": dict(self.spec),
            "origin": self.origin,
            "enabled": self.enabled,
            "next_fire_at": iso(self.next_fire_at),
            "last_fire_at": iso(self.last_fire_at),
            "last_run_id": self.last_run_id,
            "last_error": None if self.last_error is None else dict(self.last_error),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """A run's callback and how far its deliveries got."""

    run_id: str
    url: str
    secret: str | None
    """A secret *reference* (``env:NAME``, ``file:/path``) whose value signs the deliveries."""
    events: bool
    """Deliver every event too, not only the final run document."""
    delivered_seq: int
    attempts: int
    """Failed attempts of the next delivery."""
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One attempt to POST to a run's callback URL."""

    id: int
    run_id: str
    seq: int
    """The event the delivery belongs to (for ``kind = run``: the event that ended the run)."""
    kind: str
    """``run`` (the run document) or ``event``."""
    url: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float | None
    ts: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "seq": self.seq,
            "kind": self.kind,
            "url": self.url,
            "attempt": self.attempt,
            "ok": self.ok,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "ts": iso(self.ts),
        }


def _trigger(row: RowMapping) -> TriggerRecord:
    return TriggerRecord(**{c.name: row[c.name] for c in triggers.c})


def _callback(row: RowMapping) -> CallbackRecord:
    return CallbackRecord(
        run_id=row["run_id"],
        url=row["url"],
        secret=row["secret"],
        events=row["events"],
        delivered_seq=row["delivered_seq"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )


# -- triggers -----------------------------------------------------------------------------------


def insert_trigger(conn: Connection, values: Mapping[str, Any]) -> TriggerRecord:
    """Insert a trigger row (``IntegrityError`` when the name is taken)."""
    row = conn.execute(triggers.insert().values(dict(values)).returning(*triggers.c)).mappings().one()
    return _trigger(row)


def get_trigger(conn: Connection, name: str) -> TriggerRecord | None:
    row = conn.execute(select(triggers).where(triggers.c.name == name)).mappings().one_or_none()
    return None if row is None else _trigger(row)


def list_triggers(conn: Connection, kind: str | None, origin: str | None) -> list[TriggerRecord]:
    """Triggers by name, optionally of one kind and/or origin."""
    stmt = select(triggers).order_by(triggers.c.name)
    if kind is not None:
        stmt = stmt.where(triggers.c.kind == kind)
    if origin is not None:
        stmt = stmt.where(triggers.c.origin == origin)
    return [_trigger(row) for row in conn.execute(stmt).mappings()]


def update_trigger(conn: Connection, name: str, values: Mapping[str, Any]) -> TriggerRecord | None:
    stmt = update(triggers).where(triggers.c.name == name).values(dict(values)).returning(*triggers.c)
    row = conn.execute(stmt).mappings().one_or_none()
    return None if row is None else _trigger(row)


def delete_trigger(conn: Connection, name: str) -> bool:
    return (
        conn.execute(delete(triggers).where(triggers.c.name == name).returning(triggers.c.name)).first()
        is not None
    )


def due_schedules(conn: Connection, now: datetime, limit: int) -> list[TriggerRecord]:
    """Enabled schedules whose next tick is due, the most overdue first."""
    stmt = (
        select(triggers)
        .where(
            triggers.c.kind == "schedule",
            triggers.c.enabled.is_(True),
            triggers.c.next_fire_at <= now,
        )
        .order_by(triggers.c.next_fire_at)
        .limit(limit)
    )
    return [_trigger(row) for row in conn.execute(stmt).mappings()]


def advance_schedule(conn: Connection, name: str, expected: datetime, values: Mapping[str, Any]) -> bool:
    """Move a schedule on from the tick ``expected`` — only if no other scheduler did meanwhile."""
    stmt = (
        update(triggers)
        .where(triggers.c.name == name, triggers.c.next_fire_at == expected)
        .values(dict(values))
    )
    return conn.execute(stmt).rowcount == 1


# -- leases -------------------------------------------------------------------------------------


def take_lease(
    conn: Connection, dialect: Dialect, name: str, owner: str, now: datetime, expires: datetime
) -> bool:
    """Hold (or keep holding) lease ``name`` until ``expires``: True when ``owner`` holds it.

    A free lease, an expired one, or one ``owner`` already holds is taken.
    """
    first = dialect.upsert(trigger_leases, index_elements=["name"], update=[])
    if conn.execute(first, {"name": name, "owner": owner, "expires_at": expires}).rowcount == 1:
        return True
    taken = conn.execute(
        update(trigger_leases)
        .where(
            trigger_leases.c.name == name,
            (trigger_leases.c.owner == owner) | (trigger_leases.c.expires_at < now),
        )
        .values(owner=owner, expires_at=expires)
    ).rowcount
    return bool(taken == 1)


def release_lease(conn: Connection, name: str, owner: str) -> None:
    conn.execute(delete(trigger_leases).where(trigger_leases.c.name == name, trigger_leases.c.owner == owner))


# -- callbacks and deliveries -------------------------------------------------------------------


@point
def get_callback(conn: Connection, run_id: str) -> CallbackRecord | None:
    row = conn.execute(select(callbacks).where(callbacks.c.run_id == run_id)).mappings().one_or_none()
    return None if row is None else _callback(row)


def due_callbacks(conn: Connection, now: datetime, limit: int) -> list[CallbackRecord]:
    """Callbacks whose run has events not handled yet and whose next attempt is due."""
    stmt = (
        select(callbacks)
        .join(runs, runs.c.id == callbacks.c.run_id)
        .where(
            runs.c.last_seq > callbacks.c.delivered_seq,
            (callbacks.c.next_attempt_at.is_(None)) | (callbacks.c.next_attempt_at <= now),
        )
        .order_by(callbacks.c.updated_at)
        .limit(limit)
    )
    return [_callback(row) for row in conn.execute(stmt).mappings()]


def progress_callback(
    conn: Connection,
    run_id: str,
    *,
    delivered_seq: int,
    attempts: int,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    conn.execute(
        update(callbacks)
        .where(callbacks.c.run_id == run_id)
        .values(
            delivered_seq=delivered_seq, attempts=attempts, next_attempt_at=next_attempt_at, updated_at=now
        )
    )


def insert_delivery(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(deliveries.insert().values(dict(values)))


def list_deliveries(conn: Connection, run_id: str, after: int, limit: int) -> list[DeliveryRecord]:
    """Delivery attempts of the run with ``id > after``, oldest first."""
    stmt = (
        select(deliveries)
        .where(deliveries.c.run_id == run_id, deliveries.c.id > after)
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [
        DeliveryRecord(**{c.name: row[c.name] for c in deliveries.c}) for row in conn.execute(stmt).mappings()
    ]


# -- publisher cursors --------------------------------------------------------------------------


UNFINISHED: Final = tuple(status.value for status in RunStatus if not status.terminal)


def publish_backlog(
    conn: Connection, publisher: str, limit: int, since: datetime | None
) -> list[tuple[str, int, datetime]]:
    """``(run_id, published seq, run updated_at)`` of runs with events ``publisher`` has not
    published yet, least recently updated first.

    ``since`` (the publisher's watermark) limits the search to runs not finished and runs
    finished since then (through ``ix_runs_queue`` and ``ix_runs_finished_at``): a finished run
    gets no event unless it leaves its final status, which clears ``finished_at``. ``None``
    reads every run, as a publisher's first pass must.
    """
    published = func.coalesce(publish_cursors.c.seq, 0)
    stmt = (
        select(runs.c.id, published.label("seq"), runs.c.updated_at)
        .select_from(
            runs.outerjoin(
                publish_cursors,
                and_(publish_cursors.c.run_id == runs.c.id, publish_cursors.c.publisher == publisher),
            )
        )
        .where(runs.c.last_seq > published)
        .order_by(runs.c.updated_at)
        .limit(limit)
    )
    if since is not None:
        stmt = stmt.where(or_(runs.c.status.in_(UNFINISHED), runs.c.finished_at >= since))
    return [(row.id, int(row.seq), row.updated_at) for row in conn.execute(stmt)]


def get_watermark(conn: Connection, publisher: str) -> datetime | None:
    """The publisher's watermark (see ``publish_watermarks``), ``None`` before its first pass."""
    stmt = select(publish_watermarks.c.since).where(publish_watermarks.c.publisher == publisher)
    return conn.execute(stmt).scalar_one_or_none()


def set_watermark(conn: Connection, dialect: Dialect, publisher: str, since: datetime, now: datetime) -> None:
    stmt = dialect.upsert(publish_watermarks, index_elements=["publisher"], update=["since", "updated_at"])
    conn.execute(stmt, {"publisher": publisher, "since": since, "updated_at": now})


def set_cursor(
    conn: Connection, dialect: Dialect, publisher: str, run_id: str, seq: int, now: datetime
) -> None:
    stmt = dialect.upsert(
        publish_cursors, index_elements=["publisher", "run_id"], update=["seq", "updated_at"]
    )
    conn.execute(stmt, {"publisher": publisher, "run_id": run_id, "seq": seq, "updated_at": now})
