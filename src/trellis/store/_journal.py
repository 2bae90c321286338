"""The journal of a run: its event log and node states, and :func:`record`, the hot path.

The runtime calls :func:`record` once per graph step, so it is written for the fewest round
trips: one ``UPDATE runs ... RETURNING last_seq`` reserves the event sequence numbers (and applies
any run fields), one ``executemany`` inserts the events, one upsert per node state. All in the
caller's single transaction. (On PostgreSQL the same writes are one statement: see
:mod:`trellis.store._pg_journal`.)

Sequence numbers are gapless because the reservation and the inserts commit together, and
monotonic in commit order because the ``UPDATE`` locks the run's row until commit: a second
writer to the same run waits, then reads the first writer's ``last_seq``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, Integer, RowMapping, bindparam, select, update
from sqlalchemy.engine import Connection

from trellis.errors import Conflict, NotFound
from trellis.store import _queue
from trellis.store._dialect import Dialect, Runner, point
from trellis.store._prepared import Prepared
from trellis.store._runs import create as create_run
from trellis.store._runs import run_values
from trellis.store.records import EventRecord, NewEvent, NodeStateRecord, NodeStateUpdate, RunRecord
from trellis.store.schema import events as events_table
from trellis.store.schema import node_states as node_states_table
from trellis.store.schema import runs
from trellis.types import NodeStatus

_RESERVE: Final = Prepared(
    update(runs)
    .where(runs.c.id == bindparam("p_run_id"))
    .values(last_seq=runs.c.last_seq + bindparam("p_count", type_=BigInteger), updated_at=bindparam("p_now"))
    .returning(runs.c.last_seq)
)
"""``UPDATE runs SET last_seq = last_seq + :p_count ... RETURNING last_seq``."""

_INSERT_EVENTS: Final = Prepared(events_table.insert())
"""Executed with one parameter set per event (executemany)."""

RunUpdateShape = tuple[frozenset[str], bool, bool]
"""``(run fields set, whether events are counted, whether fenced by a lease token)``."""

NODE_STATE_DEFAULTS: Final[Mapping[str, Any]] = {"status": NodeStatus.PENDING.value, "attempt": 0}
"""Column values of a node's first row when the update does not give them."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one :meth:`~trellis.store.Store.record` call writes to one run, and when."""

    run_id: str
    events: Sequence[NewEvent]
    node_states: Sequence[NodeStateUpdate]
    run: Mapping[str, Any] | None
    """Run fields to change."""
    lease_token: int | None
    """When given, nothing is written unless the run is still leased under it."""
    now: datetime

    def inserted(self, last_seq: int) -> list[EventRecord]:
        """The records of :attr:`events` once stored, the last one numbered ``last_seq``."""
        first = last_seq - len(self.events) + 1
        return [
            EventRecord(
                run_id=self.run_id,
                seq=first + i,
                ts=event.ts or self.now,
                type=event.type,
                node=event.node,
                attempt=event.attempt,
                data=None if event.data is None else dict(event.data),
            )
            for i, event in enumerate(self.events)
        ]


class JournalWriter:
    """Executes the statements of :func:`record`, each a :class:`~trellis.store._prepared.Prepared`
    statement (on SQLite, run on the raw cursor).

    Also the per-store cache of the statements that vary: the run update (one per shape) and
    the node-state upsert (one per combination of given fields). A dialect may add to it:
    :meth:`announce` is PostgreSQL's notification of new events.
    """

    origin: str = ""
    """The writing store's :attr:`~trellis.store.Store.origin` (carried by notifications)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._upserts: dict[frozenset[str], Prepared] = {}
        self._run_updates: dict[RunUpdateShape, Prepared] = {}

    def run_update(self, shape: RunUpdateShape) -> Prepared:
        """``UPDATE runs SET <fields>, updated_at[, last_seq = last_seq + :p_count] WHERE id
        [AND lease_token = :p_token] RETURNING last_seq``, built once per shape.

        Bind names: ``v_<column>`` per field, ``p_run_id``, ``p_now``, ``p_count``, ``p_token``.
        """
        prepared = self._run_updates.get(shape)
        if prepared is None:
            fields, counted, fenced = shape
            values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=runs.c[k].type) for k in sorted(fields)}
            values["updated_at"] = bindparam("p_now", type_=runs.c.updated_at.type)
            if counted:
                values["last_seq"] = runs.c.last_seq + bindparam("p_count", type_=BigInteger)
            stmt = update(runs).where(runs.c.id == bindparam("p_run_id")).values(values)
            if fenced:
                stmt = stmt.where(runs.c.lease_token == bindparam("p_token", type_=BigInteger))
            prepared = self._run_updates[shape] = Prepared(stmt.returning(runs.c.last_seq))
        return prepared

    def execute_run_update(
        self, conn: Connection, shape: RunUpdateShape, params: Mapping[str, Any]
    ) -> int | None:
        """Run :meth:`run_update`; the run's ``last_seq``, or None when no row matched."""
        return _last_seq(self.run_update(shape).first(conn, params))

    def node_state_upsert(self, given: frozenset[str]) -> Prepared:
        """``INSERT`` a node state; on conflict update only the ``given`` fields (and ``updated_at``)."""
        prepared = self._upserts.get(given)
        if prepared is None:
            stmt = self._dialect.upsert(
                node_states_table,
                index_elements=("run_id", "node"),
                update=sorted(given | {"updated_at"}),
            )
            prepared = self._upserts[given] = Prepared(stmt)
        return prepared

    def execute_reserve(self, conn: Connection, params: Mapping[str, Any]) -> int | None:
        """Run :data:`_RESERVE`; the run's new ``last_seq``, or None if the run does not exist."""
        return _last_seq(_RESERVE.first(conn, params))

    def execute_insert_events(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run :data:`_INSERT_EVENTS` for every row (all rows have every column)."""
        _INSERT_EVENTS.run_many(conn, rows)

    def announce(self, conn: Connection, run_id: str, first: int, last: int) -> None:
        """Tell other processes the run has new events ``first..last`` (no-op: one process only)."""

    def execute_upsert(self, conn: Connection, given: frozenset[str], row: Mapping[str, Any]) -> None:
        """Run :meth:`node_state_upsert` for ``given`` with one row."""
        self.node_state_upsert(given).rows(conn, row, by_keys=True)

    async def write_record(self, runner: Runner, batch: Batch) -> list[EventRecord]:
        """:func:`record` through ``runner``, in one transaction (a dialect may do it otherwise)."""
        return await runner.write(record, self, batch)

    async def write_new_run(
        self,
        runner: Runner,
        values: Mapping[str, Any],
        first_event: Mapping[str, Any],
        callback: Mapping[str, Any] | None,
        wake_channel: str | None,
    ) -> RunRecord:
        """``_runs.create`` through ``runner``, in one transaction; ``wake_channel`` (a
        notification for other processes) is for dialects that have them."""
        return await runner.write(create_run, values, first_event, callback)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dialect={self._dialect!r})"


def _last_seq(row: Mapping[str, Any] | None) -> int | None:
    return None if row is None else int(row["last_seq"])


EVENTS_CHANNEL: Final = "trellis_events"
"""PostgreSQL notification channel carrying ``<run id>:<first seq>:<last seq>:<origin>`` after
events commit."""


@point
def record(conn: Connection, writer: JournalWriter, batch: Batch) -> list[EventRecord]:
    """Append events, upsert node states and update run fields, in ``conn``'s transaction.

    Raises:
        NotFound: the run does not exist.
        Conflict: ``lease_token`` was given and the run's current token differs (another worker
            claimed the run: this one must stop).
    """
    run_id, run, lease_token, now = batch.run_id, batch.run, batch.lease_token, batch.now
    count = len(batch.events)
    last_seq = 0
    if count or run or lease_token is not None:
        if run or lease_token is not None:
            fields = run_values(run or {})
            shape = (frozenset(fields), count > 0, lease_token is not None)
            params = {f"v_{k}": v for k, v in fields.items()}
            params.update(p_run_id=run_id, p_now=now, p_count=count, p_token=lease_token)
            reserved = writer.execute_run_update(conn, shape, params)
        else:
            reserved = writer.execute_reserve(conn, {"p_run_id": run_id, "p_count": count, "p_now": now})
        if reserved is None:
            raise_missing_or_fenced(conn, run_id, lease_token)
        assert reserved is not None
        last_seq = reserved

    inserted = batch.inserted(last_seq)
    if inserted:
        writer.execute_insert_events(
            conn,
            [
                {
                    "run_id": e.run_id,
                    "seq": e.seq,
                    "ts": e.ts,
                    "type": e.type,
                    "node": e.node,
                    "attempt": e.attempt,
                    "data": e.data,
                }
                for e in inserted
            ],
        )
        writer.announce(conn, run_id, inserted[0].seq, last_seq)
    for state in batch.node_states:
        given = state.values()
        row = {**NODE_STATE_DEFAULTS, **given, "run_id": run_id, "node": state.node, "updated_at": now}
        writer.execute_upsert(conn, frozenset(given), row)
    return inserted


@point
def transition(
    conn: Connection,
    writer: JournalWriter,
    run_id: str,
    expected_status: str,
    fields: Mapping[str, Any],
    *,
    events: Sequence[NewEvent],
    now: datetime,
) -> tuple[RunRecord, list[EventRecord]] | None:
    """Compare-and-set of a run's fields (see ``_queue.transition``) and the events that say so,
    in one transaction: a reader never sees the new status without its event."""
    changed = _queue.transition(conn, run_id, expected_status, fields, now=now)
    if changed is None:
        return None
    inserted = record(conn, writer, Batch(run_id, events, (), None, None, now))
    if inserted:
        changed = replace(changed, last_seq=inserted[-1].seq)
    return changed, inserted


def raise_missing_or_fenced(conn: Connection, run_id: str, lease_token: int | None) -> None:
    """Raise why a run update matched no row: the run is missing, or leased under another token."""
    token = (conn.execute(select(runs.c.lease_token).where(runs.c.id == run_id))).scalar_one_or_none()
    if token is None:
        raise NotFound(f"run {run_id!r} does not exist", details={"run_id": run_id})
    raise Conflict(
        f"run {run_id!r} is leased under token {token}, not {lease_token}: another worker claimed it",
        details={"run_id": run_id, "lease_token": lease_token, "current_lease_token": token},
    )


def event_from_row(row: Mapping[Any, Any]) -> EventRecord:
    """Build an :class:`EventRecord` from an ``events`` row."""
    return EventRecord(
        run_id=row["run_id"],
        seq=row["seq"],
        ts=row["ts"],
        type=row["type"],
        node=row["node"],
        attempt=row["attempt"],
        data=row["data"],
    )


def node_state_from_row(row: RowMapping) -> NodeStateRecord:
    """Build a :class:`NodeStateRecord` from a ``node_states`` row."""
    return NodeStateRecord(
        run_id=row["run_id"],
        node=row["node"],
        status=NodeStatus(row["status"]),
        attempt=row["attempt"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        next_attempt_at=row["next_attempt_at"],
        data=row["data"],
        updated_at=row["updated_at"],
    )


_EVENTS_AFTER = (
    select(events_table)
    .where(events_table.c.run_id == bindparam("run_id"), events_table.c.seq > bindparam("after"))
    .order_by(events_table.c.seq)
)
_LIST_EVENTS: Final = Prepared(_EVENTS_AFTER)
_LIST_EVENTS_PAGE: Final = Prepared(_EVENTS_AFTER.limit(bindparam("limit", type_=Integer)))


@point
def list_events(conn: Connection, run_id: str, *, after: int, limit: int | None) -> list[EventRecord]:
    """Events of ``run_id`` with ``seq > after``, ascending."""
    params = {"run_id": run_id, "after": after, "limit": limit}
    query = _LIST_EVENTS if limit is None else _LIST_EVENTS_PAGE
    return [event_from_row(row) for row in query.rows(conn, params)]


@point
def list_node_states(conn: Connection, run_id: str) -> list[NodeStateRecord]:
    """Node states of ``run_id`` in the order the nodes started (never-started nodes last)."""
    stmt = (
        select(node_states_table)
        .where(node_states_table.c.run_id == run_id)
        .order_by(node_states_table.c.started_at.asc().nulls_last(), node_states_table.c.node)
    )
    return [node_state_from_row(row) for row in (conn.execute(stmt)).mappings()]


@point
def get_node_state(conn: Connection, run_id: str, node: str) -> NodeStateRecord | None:
    """The state of ``node`` in ``run_id``, if the node has one."""
    stmt = select(node_states_table).where(
        node_states_table.c.run_id == run_id, node_states_table.c.node == node
    )
    row = (conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else node_state_from_row(row)
