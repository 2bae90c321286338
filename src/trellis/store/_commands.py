"""Commands: how a user's cancel, pause, approve, ... reaches the process that holds the run.

A command is a row; the API inserts it and signals the worker, the worker reads the pending rows
of its run and marks each consumed when it has acted on it. Consuming is conditional
(``consumed_at IS NULL``), so two consumers never both act on one command.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from trellis.store._dialect import point
from trellis.store._prepared import Prepared
from trellis.store.records import CommandRecord
from trellis.store.schema import commands


def command_from_row(row: Mapping[Any, Any]) -> CommandRecord:
    """Build a :class:`CommandRecord` from a ``commands`` row."""
    return CommandRecord(
        id=row["id"],
        run_id=row["run_id"],
        kind=row["kind"],
        payload=row["payload"],
        actor=row["actor"],
        created_at=row["created_at"],
        consumed_at=row["consumed_at"],
    )


@point
def post(
    conn: Connection,
    run_id: str,
    kind: str,
    payload: Mapping[str, Any] | None,
    actor: str | None,
    now: datetime,
) -> CommandRecord:
    """Insert a pending command.

    Raises:
        sqlalchemy.exc.IntegrityError: the run does not exist (foreign key).
    """
    stmt = (
        commands.insert()
        .values(
            run_id=run_id,
            kind=kind,
            payload=None if payload is None else dict(payload),
            actor=actor,
            created_at=now,
        )
        .returning(*commands.c)
    )
    return command_from_row((conn.execute(stmt)).mappings().one())


_PENDING: Final = Prepared(
    select(commands)
    .where(commands.c.run_id == bindparam("run_id"), commands.c.consumed_at.is_(None))
    .order_by(commands.c.id)
)


@point
def pending(conn: Connection, run_id: str) -> list[CommandRecord]:
    """Commands of ``run_id`` not consumed yet, oldest first."""
    return [command_from_row(row) for row in _PENDING.rows(conn, {"run_id": run_id})]


@point
def runs_with_pending(conn: Connection, run_ids: list[str]) -> set[str]:
    """Which of ``run_ids`` have a command not consumed yet (one indexed lookup per run)."""
    stmt = (
        select(commands.c.run_id)
        .where(commands.c.run_id.in_(run_ids), commands.c.consumed_at.is_(None))
        .distinct()
    )
    return set(conn.execute(stmt).scalars())


@point
def consume(conn: Connection, command_id: int, now: datetime) -> bool:
    """Mark a command consumed; False if it was already consumed (or does not exist)."""
    stmt = (
        update(commands)
        .where(commands.c.id == command_id, commands.c.consumed_at.is_(None))
        .values(consumed_at=now)
        .returning(commands.c.id)
    )
    return (conn.execute(stmt)).first() is not None
