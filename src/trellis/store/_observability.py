"""Observability: statements over ``run_logs``, the rows run analytics read, and retention.

Functions here run on a connection whose transaction the caller (:class:`~trellis.store.Store`)
owns. They return plain rows; what the numbers *mean* (rates, percentiles) is computed by
:mod:`trellis.observability`.

**Retention** keeps the run row (its input, output, error and timings) and its *last* event
(``run.succeeded``, ``run.failed`` or ``run.cancelled``), and deletes the rest of what a finished
run accumulated: events, node states, log lines and commands. Keeping the last event means a
stream of a pruned run still ends at once, and "has an event before its last" is exactly "not
pruned yet", so a prune that stopped half-way is simply done again. The LangGraph checkpoints of
the run's thread are deleted by the caller, *before* these rows (see :meth:`Store.prune_run`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.engine import Connection

from trellis.store.records import iso
from trellis.store.schema import commands, events, node_states, run_logs, runs
from trellis.types import RunStatus

FINISHED: Final = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
"""Log levels, lowest first (``level=warning`` lists warning, error and critical)."""
NODE_EVENT_TYPES: Final = ("node.succeeded", "node.failed", "node.retrying")
"""The events that end a node attempt: where an ``llm`` node's token ``usage`` is recorded."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One stored log line of a run."""

    id: int
    """Increases in the order lines were stored (the ``after`` cursor of a listing)."""
    run_id: str
    ts: datetime
    level: str
    """``debug``, ``info``, ``warning``, ``error`` or ``critical``."""
    node: str | None
    attempt: int | None
    logger: str | None
    """The Python logger that emitted it (``trellis.node`` for ``ctx.log``)."""
    message: str
    data: Mapping[str, Any] | None
    """Structured fields given with the line (``ctx.log("...", rows=3)``)."""

    def to_dict(self) -> dict[str, Any]:
        """``{id, run_id, ts, level, node, attempt, logger, message, data}``."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "ts": iso(self.ts),
            "level": self.level,
            "node": self.node,
            "attempt": self.attempt,
            "logger": self.logger,
            "message": self.message,
            "data": dict(self.data) if self.data is not None else None,
        }


# -- logs ---------------------------------------------------------------------------------------


def insert_logs(conn: Connection, run_id: str, lines: Sequence[Mapping[str, Any]]) -> int:
    """Store ``lines`` (``ts, level, message`` and optionally ``node, attempt, logger, data``)."""
    rows = [
        {
            "run_id": run_id,
            "ts": line["ts"],
            "level": str(line["level"]).lower(),
            "node": line.get("node"),
            "attempt": line.get("attempt"),
            "logger": line.get("logger"),
            "message": str(line["message"]),
            "data": line.get("data") or None,
        }
        for line in lines
    ]
    if rows:
        conn.execute(run_logs.insert(), rows)
    return len(rows)


def list_logs(
    conn: Connection,
    run_id: str,
    *,
    after: int,
    limit: int,
    node: str | None,
    level: str | None,
) -> list[LogRecord]:
    query = select(run_logs).where(run_logs.c.run_id == run_id, run_logs.c.id > after)
    if node is not None:
        query = query.where(run_logs.c.node == node)
    if level is not None:
        query = query.where(run_logs.c.level.in_(LEVELS[LEVELS.index(level) :]))
    rows = conn.execute(query.order_by(run_logs.c.id).limit(limit)).mappings()
    return [
        LogRecord(
            id=row["id"],
            run_id=row["run_id"],
            ts=row["ts"],
            level=row["level"],
            node=row["node"],
            attempt=row["attempt"],
            logger=row["logger"],
            message=row["message"],
            data=row["data"],
        )
        for row in rows
    ]


# -- analytics ----------------------------------------------------------------------------------


def _window(query: Any, workflow: str | None, since: datetime) -> Any:
    query = query.where(runs.c.created_at >= since)
    return query if workflow is None else query.where(runs.c.workflow == workflow)


def analytics_rows(conn: Connection, *, workflow: str | None, since: datetime) -> dict[str, list[Any]]:
    """The raw material of ``GET /v1/metrics/summary`` for runs created since ``since``.

    Returns ``{"runs": [(workflow, status, started_at, finished_at)], "nodes": [(workflow, node,
    status, attempt, duration_ms)], "usage": [(workflow, run_id, node, data)]}`` where ``usage``
    holds the data of node-attempt events that carry an ``llm`` token ``usage``.
    """
    run_rows = conn.execute(
        _window(
            select(runs.c.workflow, runs.c.status, runs.c.started_at, runs.c.finished_at), workflow, since
        )
    ).all()
    node_rows = conn.execute(
        _window(
            select(
                runs.c.workflow,
                node_states.c.node,
                node_states.c.status,
                node_states.c.attempt,
                node_states.c.duration_ms,
            ).join(runs, runs.c.id == node_states.c.run_id),
            workflow,
            since,
        )
    ).all()
    event_rows = conn.execute(
        _window(
            select(runs.c.workflow, events.c.run_id, events.c.node, events.c.data)
            .join(runs, runs.c.id == events.c.run_id)
            .where(events.c.type.in_(NODE_EVENT_TYPES)),
            workflow,
            since,
        )
    ).all()
    usage = [tuple(row) for row in event_rows if isinstance(row[3], dict) and row[3].get("usage")]
    return {
        "runs": [tuple(row) for row in run_rows],
        "nodes": [tuple(row) for row in node_rows],
        "usage": usage,
    }


# -- retention ----------------------------------------------------------------------------------


def _unpruned() -> Any:
    return exists().where(and_(events.c.run_id == runs.c.id, events.c.seq < runs.c.last_seq))


def prunable_runs(conn: Connection, *, before: datetime, limit: int) -> list[str]:
    """Ids of finished runs that finished before ``before`` and still hold prunable rows."""
    rows = conn.execute(
        select(runs.c.id)
        .where(runs.c.status.in_(FINISHED), runs.c.finished_at < before, _unpruned())
        .order_by(runs.c.finished_at, runs.c.id)
        .limit(limit)
    )
    return [row[0] for row in rows]


def _count(conn: Connection, table: Any, run_ids: Sequence[str], *extra: Any) -> int:
    if not run_ids:
        return 0
    query = select(func.count()).select_from(table).where(table.c.run_id.in_(run_ids), *extra)
    return int(conn.execute(query).scalar_one())


def prunable_counts(conn: Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """How many rows pruning ``run_ids`` would delete, per kind (a dry run)."""
    last_seq = select(runs.c.last_seq).where(runs.c.id == events.c.run_id).scalar_subquery()
    return {
        "events": _count(conn, events, run_ids, events.c.seq < last_seq),
        "node_states": _count(conn, node_states, run_ids),
        "logs": _count(conn, run_logs, run_ids),
        "commands": _count(conn, commands, run_ids),
    }


def prune_rows(conn: Connection, run_id: str) -> dict[str, int]:
    """Delete a finished run's events (but its last), node states, log lines and commands."""
    last_seq = conn.execute(select(runs.c.last_seq).where(runs.c.id == run_id)).scalar_one_or_none()
    if last_seq is None:
        return {"events": 0, "node_states": 0, "logs": 0, "commands": 0}
    deleted = {
        "events": conn.execute(delete(events).where(events.c.run_id == run_id, events.c.seq < last_seq)),
        "node_states": conn.execute(delete(node_states).where(node_states.c.run_id == run_id)),
        "logs": conn.execute(delete(run_logs).where(run_logs.c.run_id == run_id)),
        "commands": conn.execute(delete(commands).where(commands.c.run_id == run_id)),
    }
    return {kind: max(result.rowcount or 0, 0) for kind, result in deleted.items()}
