"""Runs: ids, statements over the ``runs`` table, and the opaque list cursor.

Functions here run on a connection whose transaction the caller owns.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection

from trellis.errors import ValidationError
from trellis.store._dialect import point
from trellis.store._prepared import Prepared
from trellis.store.records import RunRecord, iso
from trellis.store.schema import callbacks, events, runs
from trellis.types import RunStatus

UPDATABLE_FIELDS: Final = frozenset(
    {
        "status",
        "input",
        "output",
        "error",
        "priority",
        "options",
        "parked",
        "wake_at",
        "lease_owner",
        "lease_token",
        "lease_expires_at",
        "started_at",
        "finished_at",
    }
)
"""Run columns callers may change; identity, pinning, idempotency and ``last_seq`` are not."""

_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_run_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: sortable by creation time.

    The 12 bits after the millisecond timestamp are a counter (RFC 9562 §6.2, method 1), so ids
    made by one process are strictly increasing even within a millisecond.
    """
    global _last_ms, _counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, secrets.randbits(11)
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | secrets.randbits(62)
    return f"{value:032x}"


def run_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate run fields for an update; the status becomes its plain string value.

    Raises:
        TypeError: a field is not one of :data:`UPDATABLE_FIELDS`.
        ValueError: the status is not a :class:`~trellis.types.RunStatus`.
    """
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise TypeError(f"cannot update run field(s) {sorted(unknown)}; allowed: {sorted(UPDATABLE_FIELDS)}")
    values = dict(fields)
    if "status" in values:
        values["status"] = RunStatus(values["status"]).value
    return values


def run_from_row(row: Mapping[Any, Any]) -> RunRecord:
    """Build a :class:`RunRecord` from a ``runs`` row."""
    return RunRecord(
        id=row["id"],
        workflow=row["workflow"],
        version=row["version"],
        hash=row["hash"],
        status=RunStatus(row["status"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        priority=row["priority"],
        options=row["options"],
        parked=row["parked"],
        wake_at=row["wake_at"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        last_seq=row["last_seq"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
    )


@point
def create(
    conn: Connection,
    values: Mapping[str, Any],
    first_event: Mapping[str, Any],
    callback: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Insert a run row from column ``values`` with its first event row (and its ``callbacks``
    row, when given); the run as stored. (PostgreSQL: ``_pg_journal.create_at_once``.)

    ``values["last_seq"]`` must be the ``seq`` of ``first_event``.

    Raises:
        sqlalchemy.exc.IntegrityError: duplicate idempotency key, or unregistered workflow.
    """
    row = _INSERT_RUN.first(conn, values, by_keys=True)
    assert row is not None
    _INSERT_EVENT.rows(conn, first_event, by_keys=True)
    if callback is not None:
        conn.execute(callbacks.insert(), dict(callback))
    return run_from_row(row)


_INSERT_RUN: Final = Prepared(runs.insert().returning(*runs.c))
_INSERT_EVENT: Final = Prepared(events.insert())
_GET: Final = Prepared(select(runs).where(runs.c.id == bindparam("run_id")))


@point
def get(conn: Connection, run_id: str) -> RunRecord | None:
    """The run ``run_id``, if it exists."""
    row = _GET.first(conn, {"run_id": run_id})
    return None if row is None else run_from_row(row)


@point
def find_by_idempotency_key(conn: Connection, key: str) -> RunRecord | None:
    """The run created with ``Idempotency-Key: key``, if any."""
    stmt = select(runs).where(runs.c.idempotency_key == key)
    row = (conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else run_from_row(row)


@point
def update_fields(conn: Connection, run_id: str, values: Mapping[str, Any]) -> RunRecord | None:
    """``UPDATE runs SET ... RETURNING *``; ``None`` when the run does not exist."""
    stmt = update(runs).where(runs.c.id == run_id).values(dict(values)).returning(*runs.c)
    row = (conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else run_from_row(row)


def delete_run(conn: Connection, run_id: str) -> bool:
    """Delete a run (its node states, events and commands go with it); False if absent."""
    result = conn.execute(delete(runs).where(runs.c.id == run_id).returning(runs.c.id))
    return result.first() is not None


def encode_cursor(run: RunRecord) -> str:
    """The opaque cursor that continues a listing after ``run``."""
    raw = f"{iso(run.created_at)}|{run.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of the last run of the previous page.

    Raises:
        ValidationError: the cursor was not produced by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, run_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"invalid cursor {cursor!r}", details={"cursor": cursor}) from exc
    if created_at.tzinfo is None or not run_id:
        raise ValidationError(f"invalid cursor {cursor!r}", details={"cursor": cursor})
    return created_at, run_id


def list_page(
    conn: Connection,
    *,
    status: Sequence[str] | None,
    workflow: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[RunRecord], str | None]:
    """One page of runs, newest first, and the cursor of the next page (``None`` at the end).

    Pages are keyed on ``(created_at, id)`` rather than offsets, so runs created while a client
    pages through never shift a page: nothing is repeated or skipped.
    """
    if limit < 1:
        raise ValidationError(f"limit must be at least 1, not {limit}", details={"limit": limit})
    stmt = select(runs)
    if status is not None:
        wanted = [status] if isinstance(status, str) else status
        stmt = stmt.where(runs.c.status.in_([RunStatus(s).value for s in wanted]))
    if workflow is not None:
        stmt = stmt.where(runs.c.workflow == workflow)
    if created_after is not None:
        stmt = stmt.where(runs.c.created_at > created_after)
    if created_before is not None:
        stmt = stmt.where(runs.c.created_at < created_before)
    if cursor is not None:
        created_at, run_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                runs.c.created_at < created_at,
                and_(runs.c.created_at == created_at, runs.c.id < run_id),
            )
        )
    stmt = stmt.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
    page = [run_from_row(row) for row in (conn.execute(stmt)).mappings()]
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, encode_cursor(page[-1])
