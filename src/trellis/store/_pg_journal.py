"""PostgreSQL: :func:`record` and run creation as ONE statement each, run in autocommit.

On PostgreSQL every statement is a network round trip, and through SQLAlchemy's async adapter
each costs about as much CPU as the database's own work. The generic :func:`~trellis.store.
_journal.record` takes ``BEGIN``, the run update, the event insert, the notification, one
upsert per node state and ``COMMIT``: five to seven round trips per graph step. Here the same
writes are data-modifying CTEs of one statement, which PostgreSQL runs atomically:

.. code-block:: sql

    WITH r AS (UPDATE runs SET last_seq = last_seq + :count, ... WHERE id = :run [AND lease_token = :token]
               RETURNING last_seq),
         e AS (INSERT INTO events SELECT :run, r.last_seq - :count + 1, ... FROM r UNION ALL ...),
         n AS (SELECT pg_notify(:channel, :run || ':' || first || ':' || last || ':' || :origin) FROM r),
         s0 AS (INSERT INTO node_states SELECT ... FROM r ON CONFLICT (run_id, node) DO UPDATE ...)
    SELECT r.last_seq, (SELECT count(*) FROM n) FROM r

Every write reads ``r``, so when the run is missing or its lease token has changed (``r`` is
empty) nothing at all is written, as when the generic version raises inside its transaction.
The ``UPDATE`` locks the run's row until the statement commits, so sequence numbers stay gapless
and monotonic with concurrent writers. A statement is built once per shape (which run fields,
how many events, which node-state fields) and kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    bindparam,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import CTE, Select

from trellis.store._dialect import Dialect, Runner, pg_notify
from trellis.store._journal import (
    EVENTS_CHANNEL,
    NODE_STATE_DEFAULTS,
    Batch,
    JournalWriter,
    raise_missing_or_fenced,
)
from trellis.store._prepared import Prepared, Statement
from trellis.store._runs import run_from_row, run_values
from trellis.store.records import EventRecord, RunRecord
from trellis.store.schema import callbacks, runs
from trellis.store.schema import events as events_table
from trellis.store.schema import node_states as node_states_table

RecordShape = tuple[frozenset[str] | None, int, bool, tuple[frozenset[str], ...]]
"""``(run fields set, or None when the run row is not touched; number of events; fenced by a
lease token; each node state's given fields)``."""

MAX_EVENTS_AT_ONCE: Final = 32
"""Larger batches (rare: a recorder catching up) use the generic transaction instead of a
statement shape of their own."""

_EVENT_COLUMNS: Final = ("run_id", "seq", "ts", "type", "node", "attempt", "data")


def record_shape(batch: Batch) -> RecordShape | None:
    """The shape of ``batch``'s statement, or None when it is too large to have one."""
    if len(batch.events) > MAX_EVENTS_AT_ONCE:
        return None
    touches_run = bool(batch.events) or bool(batch.run) or batch.lease_token is not None
    return (
        frozenset(batch.run or ()) if touches_run else None,
        len(batch.events),
        batch.lease_token is not None,
        tuple(frozenset(state.values()) for state in batch.node_states),
    )


def record_statement(shape: RecordShape, channel: str, run_update: Statement | None) -> Prepared:
    """The one statement of a :func:`record` of ``shape``: ``run_update`` (the generic
    ``UPDATE runs ... RETURNING last_seq`` of the same shape, None when the run row is not
    touched) as its first CTE; ``channel`` carries the notification."""
    _, count, _, states = shape
    r = None if run_update is None else run_update.cte("r")
    ctes: list[CTE] = []
    notified = None
    if count:
        assert r is not None
        rows = [_event_row(r, index, count) for index in range(count)]
        source = rows[0] if count == 1 else union_all(*rows)
        ctes.append(insert(events_table).from_select(list(_EVENT_COLUMNS), source).cte("e"))
        first = r.c.last_seq - (count - 1)
        payload = func.concat(bindparam("p_run_id", type_=String), ":", first, ":", r.c.last_seq, ":")
        sent = func.pg_notify(literal(channel), func.concat(payload, bindparam("p_origin", type_=String)))
        notified = select(sent.label("sent")).select_from(r).cte("n")
    for index, given in enumerate(states):
        ctes.append(_node_state_upsert(r, index, given))
    if r is None:
        final: Select[Any, Any] = select(
            literal(0, BigInteger).label("last_seq"), literal(0, Integer).label("sent")
        )
    else:
        sent_count = (
            select(func.count()).select_from(notified).scalar_subquery()
            if notified is not None
            else literal(0, Integer)
        )
        final = select(r.c.last_seq, sent_count.label("sent")).select_from(r)
    return Prepared(final.add_cte(*ctes) if ctes else final)


def _event_row(r: CTE, index: int, count: int) -> Select[Any]:
    types = {column: events_table.c[column].type for column in _EVENT_COLUMNS}
    return select(
        bindparam("p_run_id", type_=String),
        (r.c.last_seq - (count - 1 - index)).label("seq"),
        *(bindparam(f"e{index}_{column}", type_=types[column]) for column in _EVENT_COLUMNS[2:]),
    ).select_from(r)


def _node_state_upsert(r: CTE | None, index: int, given: frozenset[str]) -> CTE:
    columns = sorted(given | NODE_STATE_DEFAULTS.keys())
    row = select(
        bindparam("p_run_id", type_=String),
        bindparam(f"s{index}_node", type_=String),
        *(bindparam(f"s{index}_{c}", type_=node_states_table.c[c].type) for c in columns),
        bindparam("p_now", type_=node_states_table.c.updated_at.type),
    )
    if r is not None:
        row = row.select_from(r)
    upsert = pg_insert(node_states_table).from_select(["run_id", "node", *columns, "updated_at"], row)
    changed = sorted(given | {"updated_at"})
    upsert = upsert.on_conflict_do_update(
        index_elements=["run_id", "node"], set_={c: upsert.excluded[c] for c in changed}
    )
    return upsert.cte(f"s{index}")


def record_params(batch: Batch, run_fields: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The parameters of :func:`record_statement` for ``batch`` (its run fields validated)."""
    now = batch.now
    params: dict[str, Any] = {f"v_{k}": v for k, v in run_fields.items()}
    params.update(
        p_run_id=batch.run_id,
        p_now=now,
        p_count=len(batch.events),
        p_token=batch.lease_token,
        p_origin=origin,
    )
    for index, event in enumerate(batch.events):
        params[f"e{index}_ts"] = event.ts or now
        params[f"e{index}_type"] = event.type
        params[f"e{index}_node"] = event.node
        params[f"e{index}_attempt"] = event.attempt
        params[f"e{index}_data"] = None if event.data is None else dict(event.data)
    for index, state in enumerate(batch.node_states):
        params[f"s{index}_node"] = state.node
        for column, value in {**NODE_STATE_DEFAULTS, **state.values()}.items():
            params[f"s{index}_{column}"] = value
    return params


# -- run creation ---------------------------------------------------------------------------------


def create_statement(columns: Sequence[str], with_callback: bool, notify: bool) -> Prepared:
    """``INSERT`` a run (``columns`` given) with its first event, and its callback row and a
    wake-up notification when asked, as one statement returning the run row."""
    values = {name: bindparam(f"r_{name}", type_=runs.c[name].type) for name in columns}
    run = insert(runs).values(values).returning(*runs.c).cte("run")
    event = select(
        run.c.id,
        *(bindparam(f"e_{column}", type_=events_table.c[column].type) for column in _EVENT_COLUMNS[1:]),
    ).select_from(run)
    ctes: list[CTE] = [insert(events_table).from_select(list(_EVENT_COLUMNS), event).cte("e")]
    if with_callback:
        names = [c.name for c in callbacks.c if c.name != "run_id"]
        row = select(run.c.id, *(bindparam(f"c_{n}", type_=callbacks.c[n].type) for n in names)).select_from(
            run
        )
        ctes.append(insert(callbacks).from_select(["run_id", *names], row).cte("c"))
    final = select(run)
    if notify:
        wake = select(func.pg_notify(bindparam("w_channel", type_=String), run.c.id).label("sent"))
        woken = wake.select_from(run).cte("w")
        final = select(run, select(func.count()).select_from(woken).scalar_subquery().label("sent"))
    return Prepared(final.add_cte(*ctes))


class PostgresJournalWriter(JournalWriter):
    """Also notifies :data:`~trellis.store._journal.EVENTS_CHANNEL` as events commit, so event
    streams served by other API processes learn of them at once; and keeps the one-statement
    forms of :func:`record` and of run creation, one per shape.

    The payload is ``<run id>:<first seq>:<last seq>:<origin>``, ``origin`` being the writing
    store's :attr:`~trellis.store.Store.origin`, so the writing process can ignore its own.
    """

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        self._records: dict[RecordShape, Prepared] = {}
        self._creates: dict[tuple[tuple[str, ...], bool, bool], Prepared] = {}

    def announce(self, conn: Connection, run_id: str, first: int, last: int) -> None:
        pg_notify(conn, EVENTS_CHANNEL, f"{run_id}:{first}:{last}:{self.origin}")

    def record_statement(self, shape: RecordShape) -> Prepared:
        prepared = self._records.get(shape)
        if prepared is None:
            fields, count, fenced, _ = shape
            change = None if fields is None else self.run_update((fields, count > 0, fenced)).stmt
            prepared = self._records[shape] = record_statement(shape, EVENTS_CHANNEL, change)
        return prepared

    async def write_record(self, runner: Runner, batch: Batch) -> list[EventRecord]:
        """One statement in autocommit (a batch too large for one: the generic transaction)."""
        shape = record_shape(batch)
        if shape is None:
            return await super().write_record(runner, batch)
        return await runner.write_statement(record_at_once, self, shape, batch)

    async def write_new_run(
        self,
        runner: Runner,
        values: Mapping[str, Any],
        first_event: Mapping[str, Any],
        callback: Mapping[str, Any] | None,
        wake_channel: str | None,
    ) -> RunRecord:
        """One statement in autocommit, the wake-up notification included."""
        return await runner.write_statement(create_at_once, self, values, first_event, callback, wake_channel)

    def create_statement(self, columns: tuple[str, ...], with_callback: bool, notify: bool) -> Prepared:
        key = (columns, with_callback, notify)
        prepared = self._creates.get(key)
        if prepared is None:
            prepared = self._creates[key] = create_statement(columns, with_callback, notify)
        return prepared


def record_at_once(
    conn: Connection, writer: PostgresJournalWriter, shape: RecordShape, batch: Batch
) -> list[EventRecord]:
    """:func:`~trellis.store._journal.record` as one statement (``conn`` in autocommit).

    Raises:
        NotFound: the run does not exist.
        Conflict: ``lease_token`` no longer matches.
    """
    params = record_params(batch, run_values(batch.run or {}), writer.origin)
    row = writer.record_statement(shape).first(conn, params)
    if row is None:
        raise_missing_or_fenced(conn, batch.run_id, batch.lease_token)
    assert row is not None
    return batch.inserted(int(row["last_seq"]))


def create_at_once(
    conn: Connection,
    writer: PostgresJournalWriter,
    values: Mapping[str, Any],
    first_event: Mapping[str, Any],
    callback: Mapping[str, Any] | None,
    wake_channel: str | None,
) -> RunRecord:
    """:func:`~trellis.store._runs.create` as one statement (``conn`` in autocommit), telling
    ``wake_channel`` the new run's id as it commits.

    Raises:
        sqlalchemy.exc.IntegrityError: duplicate idempotency key, or unregistered workflow.
    """
    columns = tuple(values)
    params = {f"r_{k}": v for k, v in values.items()}
    params.update({f"e_{k}": v for k, v in first_event.items() if k != "run_id"})
    if callback is not None:
        params.update({f"c_{k}": v for k, v in callback.items() if k != "run_id"})
    if wake_channel is not None:
        params["w_channel"] = wake_channel
    row = writer.create_statement(columns, callback is not None, wake_channel is not None).first(conn, params)
    assert row is not None
    return run_from_row(row)
