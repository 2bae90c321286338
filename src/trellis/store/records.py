"""Immutable values the store hands out (``*Record``) and takes in (:class:`NewEvent`,
:class:`NodeStateUpdate`).

Records are frozen snapshots of a row. ``to_dict()`` gives the JSON document the REST API and
``--json`` CLI output serve (DESIGN §4): plain JSON types only, timestamps as ISO 8601 UTC strings
ending in ``Z``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal

from trellis.types import NodeStatus, RunStatus

WorkflowKind = Literal["dsl", "python"]


def iso(value: datetime | None) -> str | None:
    """``2025-01-31T12:00:00.123456Z`` for an aware datetime (converted to UTC), ``None`` for ``None``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""Marks a :class:`NodeStateUpdate` field as "not given" (so ``None`` can clear a column)."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append to a run's log with :meth:`Store.record`; the store assigns ``seq``."""

    type: str
    """Event type, e.g. ``"node.started"`` (see :class:`~trellis.types.EventType`)."""
    node: str | None = None
    """Node id the event is about, if any."""
    attempt: int | None = None
    """Attempt number (1-based) of the node, if any."""
    data: Mapping[str, Any] | None = None
    """Small JSON-serialisable payload; large payloads are fetched separately, not inlined."""
    ts: datetime | None = None
    """When it happened (aware); defaults to the time of the :meth:`Store.record` call."""


@dataclass(frozen=True, slots=True)
class NodeStateUpdate:
    """A partial update of one node's state: only the fields given are written.

    A field left at :data:`UNSET` keeps its stored value (or the column default for a new row:
    status ``pending``, attempt ``0``); ``None`` clears it.
    """

    node: str
    """Node id."""
    status: NodeStatus | str | _Unset = UNSET
    """New status."""
    attempt: int | _Unset = UNSET
    """Current attempt number (1-based)."""
    started_at: datetime | _Unset | None = UNSET
    """When the current attempt started (aware)."""
    finished_at: datetime | _Unset | None = UNSET
    """When the node finished (aware)."""
    duration_ms: float | _Unset | None = UNSET
    """Duration of the node in milliseconds."""
    error: Mapping[str, Any] | _Unset | None = UNSET
    """Problem document of the last failure."""
    next_attempt_at: datetime | _Unset | None = UNSET
    """When the next retry is due, so the backoff survives a crash."""
    data: Mapping[str, Any] | _Unset | None = UNSET
    """Small extra facts (replaces the stored value; it is not merged)."""

    def values(self) -> dict[str, Any]:
        """The given fields (``node`` excluded), ready to bind; status validated and plain."""
        given = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "node" and getattr(self, f.name) is not UNSET
        }
        if "status" in given:
            given["status"] = NodeStatus(given["status"]).value
        return given


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """One registered, immutable version of a workflow."""

    name: str
    version: int
    """1, 2, ... in registration order."""
    hash: str
    """Content hash of the definition (or of the Python source) this version pins."""
    kind: WorkflowKind
    definition: dict[str, Any] | None
    """The parsed definition; ``None`` for Python workflows."""
    source: str | None
    """The original text (e.g. YAML) as submitted, if any."""
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """``{name, version, hash, kind, definition, source, created_at}``."""
        return {
            "name": self.name,
            "version": self.version,
            "hash": self.hash,
            "kind": self.kind,
            "definition": self.definition,
            "source": self.source,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored. ``to_dict()`` is the run document of ``GET /v1/runs/{id}``."""

    id: str
    workflow: str
    version: int
    hash: str
    status: RunStatus
    input: Any
    output: Any
    error: dict[str, Any] | None
    """RFC 9457 problem document of the failure, if the run failed."""
    priority: int
    options: dict[str, Any] | None
    """Execution options, e.g. ``{"step": true}``."""
    parked: dict[str, Any] | None
    """What a parked run waits for, e.g. ``{"kind": "approval", "node": "approve", "payload": {}}``."""
    wake_at: datetime | None
    """When a waiting run's timer fires."""
    idempotency_key: str | None
    request_hash: str | None
    lease_owner: str | None
    lease_token: int
    """Fencing token: incremented each time a worker claims the run."""
    lease_expires_at: datetime | None
    last_seq: int
    """Sequence number of the run's latest event."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """``{id, status, workflow, version, hash, input, output, error, priority, options,
        waiting_for, created_at, started_at, finished_at, updated_at}``."""
        return {
            "id": self.id,
            "status": self.status.value,
            "workflow": self.workflow,
            "version": self.version,
            "hash": self.hash,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "priority": self.priority,
            "options": self.options,
            "waiting_for": self.parked,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class NodeStateRecord:
    """The latest state of one node of a run."""

    run_id: str
    node: str
    status: NodeStatus
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    data: dict[str, Any] | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Every field, timestamps as ISO strings."""
        return {
            "run_id": self.run_id,
            "node": self.node,
            "status": self.status.value,
            "attempt": self.attempt,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "error": self.error,
            "next_attempt_at": iso(self.next_attempt_at),
            "data": self.data,
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a run's event log. ``to_dict()`` is the ``data:`` of an SSE frame."""

    run_id: str
    seq: int
    """Position in the run's log: 1, 2, 3, ... without gaps."""
    ts: datetime
    type: str
    node: str | None
    attempt: int | None
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """``{run_id, seq, ts, type, node, attempt, data}``."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "ts": iso(self.ts),
            "type": self.type,
            "node": self.node,
            "attempt": self.attempt,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A user's request to a run (cancel, pause, resume, approve, reject, ...)."""

    id: int
    """Increasing with posting order."""
    run_id: str
    kind: str
    payload: dict[str, Any] | None
    actor: str | None
    """Who asked, when known."""
    created_at: datetime
    consumed_at: datetime | None
    """When the process holding the run acted on it; ``None`` while pending."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, timestamps as ISO strings."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "kind": self.kind,
            "payload": self.payload,
            "actor": self.actor,
            "created_at": iso(self.created_at),
            "consumed_at": iso(self.consumed_at),
        }


__all__ = [
    "UNSET",
    "CommandRecord",
    "EventRecord",
    "NewEvent",
    "NodeStateRecord",
    "NodeStateUpdate",
    "RunRecord",
    "WorkflowKind",
    "WorkflowRecord",
    "iso",
]
