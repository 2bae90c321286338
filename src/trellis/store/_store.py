"""The :class:`Store`: every read and write of Trellis's own tables, as short transactions.

The store owns the engine and the transaction boundaries; the statements live in one module per
concern (``_workflows``, ``_runs``, ``_journal``, ``_commands``) and the dialect differences in
``_sqlite`` / ``_pg``. LangGraph's checkpoints are stored separately, see
:mod:`trellis.store.checkpointer`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from trellis.errors import Conflict, NotFound
from trellis.store import (
    _access,
    _commands,
    _journal,
    _migrate,
    _observability,
    _queue,
    _resilience,
    _runs,
    _sqlite,
    _triggers,
    _workflows,
)
from trellis.store._access import ApiKeyRecord, AuditRecord
from trellis.store._dialect import DialectName, T, dialect_for, mask_url, normalize_url
from trellis.store._journal import EVENTS_CHANNEL
from trellis.store._local_notify import SUPPORTED as LOCAL_NOTIFY_SUPPORTED
from trellis.store._local_notify import LocalNotifier
from trellis.store._observability import LogRecord
from trellis.store._resilience import AgentRecord, AgentSample, BreakerChange, BreakerRecord, SystemEvent
from trellis.store._runs import run_values
from trellis.store._triggers import CallbackRecord, DeliveryRecord, TriggerRecord
from trellis.store.records import (
    CommandRecord,
    EventRecord,
    NewEvent,
    NodeStateRecord,
    NodeStateUpdate,
    RunRecord,
    WorkflowRecord,
)
from trellis.types import EventType, RunStatus

_REGISTER_ATTEMPTS: Final = 10
"""How often :meth:`Store.put_workflow` retries when concurrent registrations collide."""


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Trellis's database: workflow versions, runs, node states, event logs and commands.

    Every method is one short transaction. Create it with :func:`open_store`, which also
    migrates the schema; close it with :meth:`close` (or ``async with``).

    Args:
        url: a database URL, e.g. ``sqlite+aiosqlite:///./.trellis/trellis.db`` or
            ``postgresql+psycopg://user@host:5432/trellis``; plain ``sqlite://`` and
            ``postgresql://`` URLs are switched to those async drivers.

    .. versionadded:: 0.1
    """

    def __init__(self, url: str | URL) -> None:
        self._url = normalize_url(url)
        self._dialect = dialect_for(self._url)
        self._runner = self._dialect.create_runner(self._url)
        self._journal = self._dialect.journal_writer()
        self.origin = secrets.token_hex(8)
        """Identifies this store's writes in the notifications it sends (see :meth:`record`)."""
        self._journal.origin = self.origin
        self.on_events: Callable[[Sequence[EventRecord]], None] | None = None
        """Called with the events every :meth:`record` of this store committed (the engine
        publishes them to its live subscribers; other processes learn of them by notification)."""
        path = _sqlite.database_path(self._url) if self._dialect.name == "sqlite" else None
        self._local = LocalNotifier(path) if path is not None else None
        """Notifications to the other processes on this SQLite file (PostgreSQL has its own)."""

    @property
    def url(self) -> str:
        """The normalised database URL, password included (mask it before logging)."""
        return self._url.render_as_string(hide_password=False)

    @property
    def dialect(self) -> DialectName:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect.name

    def __repr__(self) -> str:
        return f"Store(dialect={self.dialect!r}, url={mask_url(self._url)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish work in flight and close every connection. The store cannot be used afterwards."""
        if self._local is not None:
            self._local.close()
        await self._runner.close()

    # -- schema -------------------------------------------------------------------------------

    async def upgrade(self) -> None:
        """Migrate the schema to the newest revision (``alembic upgrade head``); idempotent."""
        if await self._runner.read(_migrate.at_head):
            return  # current: neither the migration lock nor Alembic is needed
        await self._runner.write(_migrate.upgrade, self._dialect)

    async def current_revision(self) -> str | None:
        """The schema revision of the database, ``None`` if it was never migrated."""
        return await self._runner.read(_migrate.current_revision)

    def head_revision(self) -> str:
        """The newest schema revision this version of Trellis ships."""
        return _migrate.HEAD_REVISION

    # -- workflows ----------------------------------------------------------------------------

    async def put_workflow(
        self,
        *,
        name: str,
        hash: str,
        kind: str,
        definition: dict[str, Any] | None,
        source: str | None,
    ) -> tuple[WorkflowRecord, bool]:
        """Register a workflow version; identical content is a no-op.

        Returns:
            ``(record, created)``: the existing version with this ``hash`` and False, or a new
            version numbered ``max(version) + 1`` (1 for a new name) and True.

        Safe under concurrent callers: a registration that collides with another is retried.
        """
        checked_kind = _workflows.check_kind(kind)
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                return await self._runner.write(
                    _workflows.register,
                    name=name,
                    hash=hash,
                    kind=checked_kind,
                    definition=definition,
                    source=source,
                    now=_now(),
                )
            except IntegrityError:
                if attempt + 1 == _REGISTER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_workflow(self, name: str, version: int | None = None) -> WorkflowRecord | None:
        """Version ``version`` of ``name``, or its latest version when ``version`` is None."""
        return await self._runner.read(_workflows.get, name, version)

    async def list_workflows(self) -> list[WorkflowRecord]:
        """The latest version of every registered workflow, by name."""
        return await self._runner.read(_workflows.list_latest)

    async def list_workflow_versions(self, name: str) -> list[WorkflowRecord]:
        """Every version of ``name``, oldest first (empty if the name is unknown)."""
        return await self._runner.read(_workflows.list_versions, name)

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        workflow: str,
        version: int,
        hash: str,
        input: Any,
        priority: int = 0,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        callback: Mapping[str, Any] | None = None,
        wake_channel: str | None = None,
    ) -> RunRecord:
        """Create a queued run of a registered workflow version and log ``run.queued`` (seq 1).

        ``callback`` (``{url, secret?, events?}``) is stored in the same transaction, so a run that
        exists always has the callback it was created with (see :mod:`trellis.triggers`).
        ``wake_channel``: on PostgreSQL, a notification channel told the new run's id as the
        transaction commits (as :meth:`notify` would, without a transaction of its own).

        Raises:
            NotFound: ``workflow`` version ``version`` is not registered.
            Conflict: a run with ``idempotency_key`` exists (``details["run_id"]`` names it).
        """
        now = _now()
        run_id = _runs.new_run_id()
        values = {
            "id": run_id,
            "workflow": workflow,
            "version": version,
            "hash": hash,
            "status": RunStatus.QUEUED.value,
            "input": input,
            "priority": priority,
            "options": options,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "last_seq": 1,
            "created_at": now,
            "updated_at": now,
        }
        queued = {
            "run_id": run_id,
            "seq": 1,
            "ts": now,
            "type": EventType.RUN_QUEUED.value,
            "node": None,
            "attempt": None,
            "data": {"workflow": workflow, "version": version, "priority": priority},
        }
        delivery = None
        if callback is not None:
            delivery = {
                "run_id": run_id,
                "url": callback["url"],
                "secret": callback.get("secret"),
                "events": bool(callback.get("events", False)),
                "delivered_seq": 0,
                "attempts": 0,
                "next_attempt_at": None,
                "created_at": now,
                "updated_at": now,
            }
        try:
            created = await self._journal.write_new_run(self._runner, values, queued, delivery, wake_channel)
        except IntegrityError as exc:
            await self._explain_create_failure(exc, workflow, version, idempotency_key)
            raise
        if wake_channel is not None and self._local is not None:
            self._local.send(wake_channel, (created.id,))
        return created

    async def _explain_create_failure(
        self, exc: IntegrityError, workflow: str, version: int, idempotency_key: str | None
    ) -> None:
        if idempotency_key is not None:
            existing = await self.find_run_by_idempotency_key(idempotency_key)
            if existing is not None:
                raise Conflict(
                    f"a run with idempotency key {idempotency_key!r} already exists: {existing.id}",
                    details={"idempotency_key": idempotency_key, "run_id": existing.id},
                ) from exc
        if await self.get_workflow(workflow, version) is None:
            raise NotFound(
                f"workflow {workflow}@{version} is not registered",
                details={"workflow": workflow, "version": version},
            ) from exc

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, if it exists."""
        return await self._runner.read(_runs.get, run_id)

    async def find_run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run created with this idempotency key, if any."""
        return await self._runner.read(_runs.find_by_idempotency_key, key)

    async def list_runs(
        self,
        *,
        status: Sequence[str] | None = None,
        workflow: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """A page of runs, newest first, and the opaque cursor of the next page (None at the end).

        Args:
            status: only runs in one of these statuses.
            workflow: only runs of this workflow (any version).
            created_after: only runs created strictly after this (aware) time.
            created_before: only runs created strictly before this (aware) time.
            limit: page size, at least 1.
            cursor: the cursor a previous call returned, to continue after its page. Stable
                under inserts: pages never repeat or skip a run.

        Raises:
            ValidationError: ``cursor`` is malformed or ``limit`` < 1.
        """
        return await self._runner.read(
            _runs.list_page,
            status=status,
            workflow=workflow,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )

    async def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Change run fields (``status``, ``output``, ``error``, ``parked``, ``wake_at``, ...).

        Also sets ``updated_at``. Use :meth:`record` instead when events go with the change, or
        when the change must be fenced by the caller's lease.

        Raises:
            NotFound: the run does not exist.
            TypeError: a field cannot be updated (see ``_runs.UPDATABLE_FIELDS``).
        """
        values = {**_runs.run_values(fields), "updated_at": _now()}
        run = await self._runner.write(_runs.update_fields, run_id, values)
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist", details={"run_id": run_id})
        return run

    async def delete_run(self, run_id: str) -> bool:
        """Delete a run with its node states, events and commands; False if it did not exist.

        LangGraph's checkpoints of the run's thread are not touched.
        """
        return await self._runner.write(_runs.delete_run, run_id)

    # -- journal ------------------------------------------------------------------------------

    async def record(
        self,
        run_id: str,
        *,
        events: Sequence[NewEvent] = (),
        node_states: Sequence[NodeStateUpdate] = (),
        run: Mapping[str, Any] | None = None,
        lease_token: int | None = None,
    ) -> list[EventRecord]:
        """Append events, upsert node states and update run fields in ONE transaction.

        The runtime's hot path, called once per graph step. Events get consecutive sequence
        numbers after the run's last one, gapless and monotonic even with concurrent callers.

        Args:
            run_id: the run.
            events: appended in order.
            node_states: partial updates; only the fields given change.
            run: run fields to change, as for :meth:`update_run`.
            lease_token: when given, nothing is written unless the run's lease token still
                equals it (fencing: a worker whose lease was taken over must stop).

        Returns:
            The inserted events with their ``seq`` and ``ts``.

        Raises:
            NotFound: the run does not exist.
            Conflict: ``lease_token`` no longer matches.

        Note:
            Cancelling the awaiting task does not cancel a transaction already handed to the
            database: on SQLite it still commits on the writer thread; on PostgreSQL it is rolled
            back. Record what a cancellation means (``run.cancelled``) after catching it.
        """
        batch = _journal.Batch(run_id, events, node_states, run, lease_token, _now())
        inserted = await self._journal.write_record(self._runner, batch)
        if inserted:
            self._committed(inserted)
        return inserted

    def _committed(self, inserted: Sequence[EventRecord]) -> None:
        """Events were committed: publish them here, and announce them to the other processes
        on a SQLite file (PostgreSQL announces them in the writing statement)."""
        if self.on_events is not None:
            self.on_events(inserted)
        if self._local is not None:
            payload = f"{inserted[0].run_id}:{inserted[0].seq}:{inserted[-1].seq}:{self.origin}"
            self._local.send(EVENTS_CHANNEL, (payload,))

    async def list_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """Events of the run with ``seq > after``, ascending (at most ``limit``)."""
        return await self._runner.read(_journal.list_events, run_id, after=after, limit=limit)

    async def list_node_states(self, run_id: str) -> list[NodeStateRecord]:
        """The node states of the run, in the order the nodes started."""
        return await self._runner.read(_journal.list_node_states, run_id)

    async def get_node_state(self, run_id: str, node: str) -> NodeStateRecord | None:
        """The state of one node of the run, if it has one."""
        return await self._runner.read(_journal.get_node_state, run_id, node)

    # -- commands -----------------------------------------------------------------------------

    async def post_command(
        self, run_id: str, kind: str, payload: dict[str, Any] | None = None, actor: str | None = None
    ) -> CommandRecord:
        """Queue a command (``cancel``, ``pause``, ``resume``, ``approve``, ...) for the run.

        Raises:
            NotFound: the run does not exist.
        """
        try:
            return await self._runner.write(_commands.post, run_id, kind, payload, actor, _now())
        except IntegrityError as exc:
            raise NotFound(f"run {run_id!r} does not exist", details={"run_id": run_id}) from exc

    async def pending_commands(self, run_id: str) -> list[CommandRecord]:
        """Commands of the run not consumed yet, oldest first."""
        return await self._runner.read(_commands.pending, run_id)

    async def runs_with_pending_commands(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` have commands not consumed yet: one query for all of them."""
        if not run_ids:
            return set()
        return await self._runner.read(_commands.runs_with_pending, list(run_ids))

    async def consume_command(self, command_id: int) -> bool:
        """Mark a command consumed. Returns False if it already was (another consumer won)."""
        return await self._runner.write(_commands.consume, command_id, _now())

    # -- access (API keys, audit log; used by trellis.auth and trellis.api) --------------------

    async def create_api_key(
        self, *, id: str, name: str, role: str, salt: str, secret_hash: str
    ) -> ApiKeyRecord:
        """Store a new API key (its HMAC, never the secret).

        Raises:
            Conflict: an active key already has this name.
        """
        values = {
            "id": id,
            "name": name,
            "role": role,
            "salt": salt,
            "secret_hash": secret_hash,
            "created_at": _now(),
        }
        record = await self._runner.write(_access.insert_key, values)
        if record is None:
            raise Conflict(f"an active API key named {name!r} exists; revoke it first or pick another name")
        return record

    async def list_api_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """API keys, oldest first; revoked ones only with ``include_revoked``."""
        return await self._runner.read(_access.list_keys, include_revoked=include_revoked)

    async def revoke_api_key(self, id_or_name: str) -> list[ApiKeyRecord]:
        """Revoke the active key with this id or name; the keys revoked (empty: none matched)."""
        return await self._runner.write(_access.revoke_keys, id_or_name, _now())

    async def record_audit(
        self, *, actor: str, role: str | None, method: str, path: str, run_id: str | None, status: int
    ) -> None:
        """Append one record of a mutating API call."""
        values = {
            "ts": _now(),
            "actor": actor,
            "role": role,
            "method": method,
            "path": path[:2000],
            "run_id": run_id,
            "status": status,
        }
        await self._runner.write_statement(_access.insert_audit, values)

    async def list_audit(
        self, *, run_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[AuditRecord]:
        """Audit records with ``id > after``, oldest first (at most ``limit``), optionally of one run."""
        return await self._runner.read(_access.list_audit, run_id=run_id, after=after, limit=limit)

    # -- resilience (agents, breakers, health samples, system events; see trellis.store._resilience)

    async def create_agent(self, name: str, spec: Mapping[str, Any], *, enabled: bool = True) -> AgentRecord:
        """Register a new agent (records ``agent.registered``).

        Raises:
            Conflict: an agent with this name exists.
        """
        try:
            record = await self._runner.write(_resilience.insert_agent, name, spec, enabled, _now())
        except IntegrityError:  # registered concurrently by another process
            record = None
        if record is None:
            raise Conflict(f"an agent named {name!r} is already registered", details={"agent": name})
        return record

    async def update_agent(
        self,
        name: str,
        *,
        spec: Mapping[str, Any] | None = None,
        enabled: bool | None = None,
        revision: int | None = None,
    ) -> tuple[AgentRecord, bool]:
        """Change an agent's spec and/or enabled flag: ``(record, changed)``.

        Args:
            revision: apply only if the agent is still at this revision (optimistic locking).

        Raises:
            NotFound: no agent has this name.
            Conflict: ``revision`` was given and the agent has changed since.
        """
        record, changed = await self._runner.write(
            _resilience.update_agent, name, _now(), spec=spec, enabled=enabled, revision=revision
        )
        if record is None:
            raise NotFound(f"no agent named {name!r} is registered", details={"agent": name})
        if revision is not None and not changed and record.revision != revision:
            raise Conflict(
                f"agent {name!r} changed meanwhile (revision {record.revision}, expected {revision})",
                details={"agent": name, "revision": record.revision},
            )
        return record, changed

    async def get_agent(self, name: str) -> AgentRecord | None:
        return await self._runner.read(_resilience.get_agent, name)

    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent, by name."""
        return await self._runner.read(_resilience.list_agents)

    async def claim_probe(self, name: str, *, interval_seconds: float) -> bool:
        """Take the due health probe of ``name``: True for one process per interval, cluster-wide."""
        return await self._runner.write(_resilience.claim_probe, name, _now(), interval_seconds)

    async def set_agent_health(self, name: str, healthy: bool, data: Mapping[str, Any]) -> bool:
        """Record a health transition (``agent.healthy|unhealthy``); False if it already was."""
        return await self._runner.write(_resilience.set_agent_health, name, healthy, _now(), data)

    async def add_agent_samples(self, samples: Sequence[AgentSample]) -> None:
        await self._runner.write(_resilience.insert_samples, samples)

    async def agent_samples(self, name: str, *, since: datetime, limit: int = 1000) -> list[AgentSample]:
        """The newest ``limit`` samples of agent ``name`` after ``since``, oldest first."""
        return await self._runner.read(_resilience.list_samples, name, since, limit)

    async def prune_agent_samples(self, *, before: datetime) -> int:
        return await self._runner.write(_resilience.prune_samples, before)

    async def get_breaker(self, key: str) -> BreakerRecord | None:
        return await self._runner.read(_resilience.get_breaker, key)

    async def list_breakers(self) -> list[BreakerRecord]:
        return await self._runner.read(_resilience.list_breakers)

    async def change_breaker(self, key: str, policy: Mapping[str, Any], change: BreakerChange[T]) -> T:
        """Apply a pure state change to breaker ``key`` atomically; see :func:`_resilience.change_breaker`."""
        return await self._runner.write(
            _resilience.change_breaker, self._dialect, key, policy, change, _now()
        )

    async def delete_breaker(self, key: str) -> bool:
        return await self._runner.write(_resilience.delete_breaker, key)

    async def record_system_events(self, events: Sequence[SystemEvent]) -> None:
        await self._runner.write(_resilience.insert_events, events, _now())

    async def list_system_events(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        type_prefix: str | None = None,
        subject: str | None = None,
    ) -> list[SystemEvent]:
        """Events outside any run (``breaker.*``, ``agent.*``) with ``id > after``, oldest first."""
        return await self._runner.read(
            _resilience.list_events, after=after, limit=limit, type_prefix=type_prefix, subject=subject
        )

    # -- observability (run logs, analytics rows, retention; see trellis.store._observability) ------

    async def append_logs(self, run_id: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Store log lines of a run (``ts, level, message`` and ``node, attempt, logger, data``)."""
        if not lines:
            return 0
        return await self._runner.write(_observability.insert_logs, run_id, lines)

    async def list_logs(
        self,
        run_id: str,
        *,
        after: int = 0,
        limit: int = 500,
        node: str | None = None,
        level: str | None = None,
    ) -> list[LogRecord]:
        """Log lines of the run with ``id > after``, oldest first; ``level`` is the lowest listed."""
        return await self._runner.read(
            _observability.list_logs, run_id, after=after, limit=limit, node=node, level=level
        )

    async def analytics_rows(self, *, workflow: str | None, since: datetime) -> dict[str, list[Any]]:
        """Runs, node states and token usage of runs created since ``since`` (for run analytics)."""
        return await self._runner.read(_observability.analytics_rows, workflow=workflow, since=since)

    async def prunable_runs(self, *, before: datetime, limit: int = 500) -> list[str]:
        """Finished runs (oldest first) that finished before ``before`` and were not pruned yet."""
        return await self._runner.read(_observability.prunable_runs, before=before, limit=limit)

    async def prunable_counts(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Rows :meth:`prune_run_rows` would delete for ``run_ids``, per kind."""
        return await self._runner.read(_observability.prunable_counts, run_ids)

    async def prune_run_rows(self, run_id: str) -> dict[str, int]:
        """Delete a finished run's events but its last, node states, log lines and commands.

        The run row stays. Delete the run's LangGraph checkpoints *first*: a run that still has
        events is found again by :meth:`prunable_runs`, so an interrupted prune is redone.
        """
        return await self._runner.write(_observability.prune_rows, run_id)

    # -- queue (claims under leases with fencing tokens; see trellis.store._queue) ------------------

    async def claim_runs(self, *, owner: str, limit: int, lease_seconds: float) -> list[RunRecord]:
        """Claim up to ``limit`` claimable runs (queued, lease expired, or timer due) for ``owner``."""
        return await self._runner.write(
            _queue.claim,
            owner=owner,
            limit=limit,
            lease_seconds=lease_seconds,
            now=_now(),
            postgres=self.dialect == "postgresql",
        )

    async def claim_run(
        self,
        run_id: str,
        *,
        owner: str,
        expected_token: int,
        expected_status: str,
        lease_seconds: float,
        fields: Mapping[str, Any] | None = None,
    ) -> RunRecord | None:
        """Claim one run if it is still as the caller saw it (status and lease token); else ``None``."""
        return await self._runner.write(
            _queue.claim_one,
            run_id,
            owner=owner,
            expected_token=expected_token,
            expected_status=expected_status,
            lease_seconds=lease_seconds,
            now=_now(),
            fields=run_values(fields) if fields else None,
        )

    async def transition_run(
        self, run_id: str, expected_status: str, *, events: Sequence[NewEvent] = (), **fields: Any
    ) -> tuple[RunRecord, list[EventRecord]] | None:
        """Update a run only if its status is still ``expected_status`` (compare-and-set), and
        append ``events`` in the same transaction; ``None`` when the status was another.

        Returns:
            The run as updated and the inserted events.
        """
        changed = await self._runner.write(
            _journal.transition,
            self._journal,
            run_id,
            expected_status,
            run_values(fields),
            events=events,
            now=_now(),
        )
        if changed is not None and changed[1]:
            self._committed(changed[1])
        return changed

    async def heartbeat_lease(self, run_id: str, token: int, *, lease_seconds: float) -> bool:
        """Extend a lease still held under ``token``; False when another worker took the run."""
        return await self._runner.write(
            _queue.heartbeat, run_id, token, lease_seconds=lease_seconds, now=_now()
        )

    async def lease_holds(self, run_id: str, token: int) -> bool:
        """Whether the run is still leased under ``token`` (the fence checked before checkpoint writes)."""
        return await self._runner.read(_queue.lease_holds, run_id, token)

    async def release_run(self, run_id: str, token: int) -> bool:
        """Hand a run back to the queue at once (a stopping worker); False if no longer held."""
        return await self._runner.write(_queue.release, run_id, token, now=_now())

    async def beat_worker(
        self,
        *,
        worker_id: str,
        host: str,
        pid: int,
        concurrency: int,
        running: int,
        draining: bool = False,
        started: bool = False,
    ) -> None:
        """Register (``started``) or heartbeat a worker process."""
        await self._runner.write(
            _queue.upsert_worker,
            worker_id=worker_id,
            host=host,
            pid=pid,
            concurrency=concurrency,
            running=running,
            draining=draining,
            now=_now(),
            started=started,
        )

    async def remove_worker(self, worker_id: str) -> None:
        await self._runner.write(_queue.remove_worker, worker_id)

    async def queue_stats(self, *, alive_seconds: float) -> dict[str, Any]:
        """Depth by status and workflow, oldest queued age, workers (alive or not), leases."""
        return await self._runner.read(_queue.stats, now=_now(), alive_seconds=alive_seconds)

    # -- triggers, callbacks, publishers (see trellis.store._triggers and trellis.triggers) ------

    async def create_trigger(
        self,
        *,
        name: str,
        kind: str,
        workflow: str,
        spec: Mapping[str, Any],
        origin: str,
        enabled: bool = True,
        next_fire_at: datetime | None = None,
    ) -> TriggerRecord:
        """Store a new trigger.

        Raises:
            Conflict: a trigger with this name exists.
        """
        now = _now()
        values = {
            "name": name,
            "kind": kind,
            "workflow": workflow,
            "spec": dict(spec),
            "origin": origin,
            "enabled": enabled,
            "next_fire_at": next_fire_at,
            "created_at": now,
            "updated_at": now,
        }
        try:
            return await self._runner.write(_triggers.insert_trigger, values)
        except IntegrityError as exc:
            raise Conflict(f"a trigger named {name!r} exists", details={"trigger": name}) from exc

    async def get_trigger(self, name: str) -> TriggerRecord | None:
        return await self._runner.read(_triggers.get_trigger, name)

    async def list_triggers(
        self, *, kind: str | None = None, origin: str | None = None
    ) -> list[TriggerRecord]:
        """Triggers by name, optionally only of one ``kind`` and/or ``origin``."""
        return await self._runner.read(_triggers.list_triggers, kind, origin)

    async def update_trigger(self, name: str, **fields: Any) -> TriggerRecord:
        """Change trigger columns (``spec``, ``enabled``, ``next_fire_at``, ``last_error``, ...).

        Raises:
            NotFound: no trigger has this name.
        """
        record = await self._runner.write(_triggers.update_trigger, name, {**fields, "updated_at": _now()})
        if record is None:
            raise NotFound(f"no trigger named {name!r}", details={"trigger": name})
        return record

    async def delete_trigger(self, name: str) -> bool:
        return await self._runner.write(_triggers.delete_trigger, name)

    async def due_schedules(self, *, now: datetime, limit: int = 100) -> list[TriggerRecord]:
        """Enabled schedules whose next tick is at or before ``now``."""
        return await self._runner.read(_triggers.due_schedules, now, limit)

    async def advance_schedule(self, name: str, *, expected: datetime, **fields: Any) -> bool:
        """Set a schedule's fields if its ``next_fire_at`` still equals ``expected`` (compare-and-set)."""
        return await self._runner.write(
            _triggers.advance_schedule, name, expected, {**fields, "updated_at": _now()}
        )

    async def take_lease(self, name: str, *, owner: str, seconds: float) -> bool:
        """Hold the cluster-wide lease ``name`` for ``seconds`` more: True when ``owner`` holds it."""
        now = _now()
        try:
            return await self._runner.write(
                _triggers.take_lease, self._dialect, name, owner, now, now + timedelta(seconds=seconds)
            )
        except IntegrityError:  # pragma: no cover - the insert is ON CONFLICT DO NOTHING
            return False

    async def release_lease(self, name: str, *, owner: str) -> None:
        await self._runner.write(_triggers.release_lease, name, owner)

    async def get_callback(self, run_id: str) -> CallbackRecord | None:
        return await self._runner.read(_triggers.get_callback, run_id)

    async def due_callbacks(self, *, limit: int = 50) -> list[CallbackRecord]:
        """Callbacks with undelivered events whose next attempt is due."""
        return await self._runner.read(_triggers.due_callbacks, _now(), limit)

    async def progress_callback(
        self, run_id: str, *, delivered_seq: int, attempts: int, next_attempt_at: datetime | None
    ) -> None:
        await self._runner.write(
            _triggers.progress_callback,
            run_id,
            delivered_seq=delivered_seq,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            now=_now(),
        )

    async def record_delivery(
        self,
        run_id: str,
        *,
        seq: int,
        kind: str,
        url: str,
        attempt: int,
        ok: bool,
        status_code: int | None,
        error: str | None,
        duration_ms: float | None,
    ) -> None:
        """Append one delivery attempt to the run's record."""
        values = {
            "run_id": run_id,
            "seq": seq,
            "kind": kind,
            "url": url[:2000],
            "attempt": attempt,
            "ok": ok,
            "status_code": status_code,
            "error": None if error is None else error[:2000],
            "duration_ms": duration_ms,
            "ts": _now(),
        }
        await self._runner.write(_triggers.insert_delivery, values)

    async def list_deliveries(self, run_id: str, *, after: int = 0, limit: int = 100) -> list[DeliveryRecord]:
        """Delivery attempts of the run with ``id > after``, oldest first."""
        return await self._runner.read(_triggers.list_deliveries, run_id, after, limit)

    async def publish_backlog(
        self, publisher: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[tuple[str, int, datetime]]:
        """``(run_id, seq published so far, run updated_at)`` of runs with events ``publisher``
        has not published, least recently updated first; with ``since``, only among the runs not
        finished and those finished at or after ``since``."""
        return await self._runner.read(_triggers.publish_backlog, publisher, limit, since)

    async def publish_watermark(self, publisher: str) -> datetime | None:
        """Every run ``publisher`` has not published in full is unfinished or finished after this."""
        return await self._runner.read(_triggers.get_watermark, publisher)

    async def set_publish_watermark(self, publisher: str, since: datetime) -> None:
        await self._runner.write(_triggers.set_watermark, self._dialect, publisher, since, _now())

    async def set_publish_cursor(self, publisher: str, run_id: str, seq: int) -> None:
        """Record that ``publisher`` published the run's events up to ``seq``."""
        await self._runner.write(_triggers.set_cursor, self._dialect, publisher, run_id, seq, _now())

    def notifications(self, *channels: str) -> AsyncIterator[tuple[str, str]]:
        """Notifications from other processes on ``channels`` as ``(channel, payload)``, forever:
        PostgreSQL's ``LISTEN``, or on a SQLite file the datagrams of :mod:`._local_notify`.

        The first item is ``("", "")`` once listening. For an in-memory SQLite database (one
        process by definition) nothing ever arrives: the iterator just waits to be cancelled.
        """
        if self.dialect == "postgresql":
            from trellis.store._listen import notifications

            return notifications(self._url, channels)
        if self._local is not None:
            return self._local.listen(channels)
        return _never()

    async def notify(self, channel: str, *payloads: str) -> None:
        """Notify the other processes on this database (``NOTIFY`` on PostgreSQL, datagrams to
        the processes on the same SQLite file)."""
        if not payloads:
            return
        if self.dialect == "postgresql":
            await self._runner.write(_queue.notify, channel, payloads)
        elif self._local is not None:
            self._local.send(channel, payloads)

    @property
    def signals_processes(self) -> bool:
        """Whether notifications reach the other processes on this database (so that polling
        for what they announce is only a fallback)."""
        return self.dialect == "postgresql" or (self._local is not None and LOCAL_NOTIFY_SUPPORTED)


async def _never() -> AsyncIterator[tuple[str, str]]:
    yield ("", "")
    await asyncio.Event().wait()


async def open_store(url: str | URL, *, migrate: bool = True) -> Store:
    """Open the Trellis database at ``url``, migrating it to the newest schema first.

    Args:
        url: e.g. ``sqlite+aiosqlite:///./.trellis/trellis.db`` (the parent directory is
            created) or ``postgresql+psycopg://user@host:5432/trellis``.
        migrate: run ``alembic upgrade head`` (idempotent, safe with concurrent processes).

    Example:
        ::

            store = await open_store("sqlite+aiosqlite:///./.trellis/trellis.db")
            try:
                workflow, _ = await store.put_workflow(name="hello", hash="...", kind="dsl",
                                                       definition={...}, source=None)
            finally:
                await store.close()

    .. versionadded:: 0.1
    """
    store = Store(url)
    if migrate:
        try:
            await store.upgrade()
        except BaseException:
            await store.close()
            raise
    return store
