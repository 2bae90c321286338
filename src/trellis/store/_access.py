"""Access: statements over ``api_keys`` and ``audit_log``, and the records they return.

Functions here run on a connection whose transaction the caller (:class:`~trellis.store.Store`)
owns. Secrets never reach this module: callers store and compare HMACs (see :mod:`trellis.auth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, or_, select, update
from sqlalchemy.engine import Connection

from trellis.store._dialect import point
from trellis.store._prepared import Prepared
from trellis.store.records import iso
from trellis.store.schema import api_keys, audit_log


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key as stored: who it is, what it may do, and the HMAC of its secret."""

    id: str
    """Public identifier, the start of the secret (``trl_<id>...``); safe to show and log."""
    name: str
    """Who uses it (``ci``, ``alice``); the actor recorded in the audit log and on approvals."""
    role: str
    """``viewer``, ``operator``, ``approver`` or ``admin``."""
    salt: str
    """Per-key random salt (hex) of the HMAC."""
    secret_hash: str
    """``HMAC-SHA256(salt, secret)`` in hex."""
    created_at: datetime
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """``{id, name, role, created_at, revoked_at}`` (never the salt or hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
        }

    def __repr__(self) -> str:
        return f"ApiKeyRecord(id={self.id!r}, name={self.name!r}, role={self.role!r})"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One mutating API call: who made it, as what role, what it was, and how it was answered."""

    id: int
    """Increasing in recording order."""
    ts: datetime
    actor: str
    """The key's name, ``anonymous`` when the API is open, ``unauthenticated`` for a refused key."""
    role: str | None
    method: str
    path: str
    run_id: str | None
    status: int
    """HTTP status code of the answer."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, the timestamp as an ISO string."""
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "actor": self.actor,
            "role": self.role,
            "method": self.method,
            "path": self.path,
            "run_id": self.run_id,
            "status": self.status,
        }


def _key(row: RowMapping) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        salt=row["salt"],
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _audit(row: RowMapping) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        ts=row["ts"],
        actor=row["actor"],
        role=row["role"],
        method=row["method"],
        path=row["path"],
        run_id=row["run_id"],
        status=row["status"],
    )


def insert_key(conn: Connection, values: Mapping[str, Any]) -> ApiKeyRecord | None:
    """Insert a key; ``None`` (nothing inserted) when an active key already has its name."""
    taken = conn.execute(
        select(api_keys.c.id).where(api_keys.c.name == values["name"], api_keys.c.revoked_at.is_(None))
    ).first()
    if taken is not None:
        return None
    row = conn.execute(api_keys.insert().values(dict(values)).returning(*api_keys.c)).mappings().one()
    return _key(row)


@point
def list_keys(conn: Connection, *, include_revoked: bool) -> list[ApiKeyRecord]:
    """Keys by creation time; revoked ones only when asked."""
    stmt = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if not include_revoked:
        stmt = stmt.where(api_keys.c.revoked_at.is_(None))
    return [_key(row) for row in conn.execute(stmt).mappings()]


def revoke_keys(conn: Connection, id_or_name: str, now: datetime) -> list[ApiKeyRecord]:
    """Revoke the active key with this id, or the active keys with this name; those revoked."""
    stmt = (
        update(api_keys)
        .where(
            or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name),
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .returning(*api_keys.c)
    )
    return [_key(row) for row in conn.execute(stmt).mappings()]


_INSERT_AUDIT: Final = Prepared(audit_log.insert())


@point
def insert_audit(conn: Connection, values: Mapping[str, Any]) -> None:
    """Append one audit record."""
    _INSERT_AUDIT.rows(conn, values, by_keys=True)


def list_audit(conn: Connection, *, run_id: str | None, after: int, limit: int) -> list[AuditRecord]:
    """Audit records with ``id > after``, oldest first, optionally of one run."""
    stmt = select(audit_log).where(audit_log.c.id > after)
    if run_id is not None:
        stmt = stmt.where(audit_log.c.run_id == run_id)
    stmt = stmt.order_by(audit_log.c.id).limit(limit)
    return [_audit(row) for row in conn.execute(stmt).mappings()]
