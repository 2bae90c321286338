"""Workflow versions: statements over the ``workflows`` table.

Functions here run on a connection whose transaction the caller (:class:`~trellis.store.Store`)
owns. Versions are immutable; a new version number is derived in the same ``INSERT`` that
stores it, so concurrent registrations either collide on the primary key (and the caller retries)
or get consecutive numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, cast, get_args

from sqlalchemy import bindparam, func, literal, select
from sqlalchemy.engine import Connection

from trellis.store._dialect import point
from trellis.store._prepared import Prepared
from trellis.store.records import WorkflowKind, WorkflowRecord
from trellis.store.schema import JSONDocument, UTCDateTime, workflows

_KINDS: frozenset[str] = frozenset(get_args(WorkflowKind))


def check_kind(kind: str) -> WorkflowKind:
    """``kind`` as a :data:`WorkflowKind`, or :class:`ValueError`."""
    if kind not in _KINDS:
        raise ValueError(f"workflow kind must be one of {sorted(_KINDS)}, not {kind!r}")
    return cast(WorkflowKind, kind)


def workflow_from_row(row: Mapping[Any, Any]) -> WorkflowRecord:
    """Build a :class:`WorkflowRecord` from a ``workflows`` row."""
    return WorkflowRecord(
        name=row["name"],
        version=row["version"],
        hash=row["hash"],
        kind=check_kind(row["kind"]),
        definition=row["definition"],
        source=row["source"],
        created_at=row["created_at"],
    )


def find_by_hash(conn: Connection, name: str, hash: str) -> WorkflowRecord | None:
    """The version of ``name`` whose content hash is ``hash``, if registered."""
    stmt = select(workflows).where(workflows.c.name == name, workflows.c.hash == hash)
    row = (conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else workflow_from_row(row)


def insert_next_version(
    conn: Connection,
    *,
    name: str,
    hash: str,
    kind: WorkflowKind,
    definition: dict[str, Any] | None,
    source: str | None,
    now: datetime,
) -> WorkflowRecord:
    """Insert ``name`` as version ``max(version) + 1`` (1 for a new name) in one statement.

    Raises:
        sqlalchemy.exc.IntegrityError: a concurrent caller took that version number, or
            registered the same hash first; retry in a new transaction.
    """
    next_version = (
        select(func.coalesce(func.max(workflows.c.version), 0) + 1)
        .where(workflows.c.name == name)
        .scalar_subquery()
    )
    stmt = (
        workflows.insert()
        .from_select(
            ["name", "version", "hash", "kind", "definition", "source", "created_at"],
            select(
                literal(name),
                next_version,
                literal(hash),
                literal(kind),
                literal(definition, JSONDocument),
                literal(source),
                literal(now, UTCDateTime),
            ),
        )
        .returning(workflows.c.version)
    )
    version = (conn.execute(stmt)).scalar_one()
    return WorkflowRecord(
        name=name,
        version=version,
        hash=hash,
        kind=kind,
        definition=definition,
        source=source,
        created_at=now,
    )


def register(
    conn: Connection,
    *,
    name: str,
    hash: str,
    kind: WorkflowKind,
    definition: dict[str, Any] | None,
    source: str | None,
    now: datetime,
) -> tuple[WorkflowRecord, bool]:
    """The version of ``name`` with this ``hash`` (and False), or a new version (and True).

    Raises:
        sqlalchemy.exc.IntegrityError: a concurrent registration collided; retry.
    """
    existing = find_by_hash(conn, name, hash)
    if existing is not None:
        return existing, False
    record = insert_next_version(
        conn, name=name, hash=hash, kind=kind, definition=definition, source=source, now=now
    )
    return record, True


_LATEST: Final = Prepared(
    select(workflows)
    .where(workflows.c.name == bindparam("name"))
    .order_by(workflows.c.version.desc())
    .limit(1)
)
_VERSION: Final = Prepared(
    select(workflows).where(
        workflows.c.name == bindparam("name"), workflows.c.version == bindparam("version")
    )
)


@point
def get(conn: Connection, name: str, version: int | None) -> WorkflowRecord | None:
    """Version ``version`` of ``name`` (the latest when ``None``)."""
    if version is None:
        row = _LATEST.first(conn, {"name": name})
    else:
        row = _VERSION.first(conn, {"name": name, "version": version})
    return None if row is None else workflow_from_row(row)


def list_latest(conn: Connection) -> list[WorkflowRecord]:
    """The latest version of every workflow, by name."""
    latest = (
        select(workflows.c.name, func.max(workflows.c.version).label("version"))
        .group_by(workflows.c.name)
        .subquery()
    )
    stmt = (
        select(workflows)
        .join(latest, (workflows.c.name == latest.c.name) & (workflows.c.version == latest.c.version))
        .order_by(workflows.c.name)
    )
    return [workflow_from_row(row) for row in (conn.execute(stmt)).mappings()]


def list_versions(conn: Connection, name: str) -> list[WorkflowRecord]:
    """Every version of ``name``, oldest first."""
    stmt = select(workflows).where(workflows.c.name == name).order_by(workflows.c.version)
    return [workflow_from_row(row) for row in (conn.execute(stmt)).mappings()]
