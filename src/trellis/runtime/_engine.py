"""The engine: registers workflows, creates runs, executes them, and applies users' commands.

Everything a user does to a run is written to the store first (a command row, or the run's
own fields when nothing holds it) and then acted on by whichever process holds the run, so
it works the same whether the run executes in this process, another one, or nowhere yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import ValidationError as PydanticValidationError

from trellis._jsonschema import first_violation
from trellis.agents import AGENTS_CHANNEL, AgentDirectory, AgentSpec, HealthMonitor, check_name
from trellis.compiler import CompiledWorkflow, Compiler
from trellis.config import Settings
from trellis.dsl import Workflow, content_hash, load_document, validate
from trellis.errors import Conflict, DefinitionError, NotFound, ValidationError
from trellis.nodes._env import BuildEnv
from trellis.nodes._logs import install_capture
from trellis.nodes._wrapper import public_state
from trellis.nodes.approval import validate_decision_data
from trellis.observability import Instruments
from trellis.registry import Registry, registry
from trellis.resilience import BreakerBoard, BreakerPolicy, breaker_key
from trellis.runtime._bus import EventBus
from trellis.runtime._diff import diff
from trellis.runtime._execute import (
    COMMAND_FALLBACK_SECONDS,
    COMMAND_POLL_SECONDS,
    Executor,
    describe_parked,
    new_owner_id,
)
from trellis.runtime._fence import FencedSaver
from trellis.store import (
    AgentRecord,
    BreakerRecord,
    NewEvent,
    RunRecord,
    Store,
    SystemEvent,
    WorkflowRecord,
    open_checkpointer,
    open_store,
)
from trellis.store._journal import EVENTS_CHANNEL
from trellis.types import RunStatus

log = logging.getLogger(__name__)

LISTEN_WAIT_SECONDS = 5.0
"""How long opening an engine waits for its notification listener before going on without it."""
QUEUE_CHANNEL = "trellis_queue"
"""PostgreSQL notification channel: a run became claimable (payload: run id)."""
UPDATE_ATTEMPTS = 5
"""How often :meth:`Engine.update_agent` merges again after losing a race with another update."""
COMMANDS_CHANNEL = "trellis_commands"
"""PostgreSQL notification channel: a command was posted for a run (payload: run id)."""


class Engine:
    """Trellis in one process: store, checkpointer, compiler, executor and event bus."""

    def __init__(
        self,
        *,
        store: Store,
        checkpointer: BaseCheckpointSaver[Any],
        settings: Settings,
        registry: Registry = registry,
        lease_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.registry = registry
        self.bus = EventBus(fetch=lambda run_id, after: store.list_events(run_id, after=after, limit=500))
        store.on_events = self.bus.publish
        self.owner = new_owner_id()
        self.wakeup = asyncio.Event()
        """Set when runs may have become claimable (queued here, or notified by another process)."""
        self.agents = AgentDirectory(store)
        self.breakers = BreakerBoard(store)
        self.env = BuildEnv(
            registry=registry,
            models=dict(settings.models),
            agents=self.agents,
            breakers=self.breakers,
            http_breaker=None if settings.http_breaker is None else BreakerPolicy(**settings.http_breaker),
            load_subworkflow=self._load_subworkflow,
        )
        self.health = HealthMonitor(store, self.agents, self.env.http)
        self.env.health = self.health
        self.saver = FencedSaver(checkpointer, store)
        self.compiler = Compiler(self.env, self.saver)
        self.executor = Executor(self, lease_seconds=lease_seconds or settings.lease_seconds)
        self.instruments = Instruments()
        """This process's Prometheus counters and histograms (served at ``/metrics``)."""
        install_capture()  # node log lines (Python logging inside a node) are stored with the run
        self._listening = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings | None = None, *, monitor: bool = False, **kwargs: Any
    ) -> AsyncIterator[Engine]:
        """Open the configured database (migrating it) and load the project's tool modules.

        Args:
            monitor: run the agents' :class:`~trellis.agents.HealthMonitor` while open (serving
                and worker processes do; one-off commands need not).
        """
        settings = settings or Settings.load()
        reg: Registry = kwargs.pop("registry", registry)
        for module in settings.tools:
            reg.load(module)
        store = await open_store(settings.database_url)
        try:
            async with open_checkpointer(settings.database_url) as saver:
                engine = cls(store=store, checkpointer=saver, settings=settings, registry=reg, **kwargs)
                await engine._seed_agents()
                background = [
                    asyncio.create_task(engine._listen(), name="trellis-listen"),
                    asyncio.create_task(
                        engine.executor.sweep_commands(engine._command_sweep_seconds), name="trellis-commands"
                    ),
                ]
                if monitor:
                    background.append(asyncio.create_task(engine.health.run(), name="trellis-health"))
                try:
                    try:  # notifications only speed things up; polling covers their absence
                        await asyncio.wait_for(engine._listening.wait(), LISTEN_WAIT_SECONDS)
                    except TimeoutError:
                        log.warning("not listening for notifications yet; relying on polling meanwhile")
                    yield engine
                finally:
                    for task in background:
                        task.cancel()
                    await asyncio.gather(*background, return_exceptions=True)
                    if not monitor:
                        await engine.health.flush()
                    await engine.env.aclose()
        finally:
            await store.close()

    # -- signals between processes ------------------------------------------------------------

    async def _listen(self) -> None:
        """Act on notifications from other processes (PostgreSQL ``LISTEN``)."""
        async for channel, payload in self.store.notifications(
            QUEUE_CHANNEL, COMMANDS_CHANNEL, EVENTS_CHANNEL, AGENTS_CHANNEL
        ):
            if channel == "":
                self._listening.set()
                self.executor.notice_all()  # (re)connected: what was sent meanwhile is lost
            elif channel == AGENTS_CHANNEL:
                self.agents.invalidate(payload or None)
            elif channel == QUEUE_CHANNEL:
                self.wakeup.set()
            elif channel == COMMANDS_CHANNEL:
                self.executor.notice_command(payload)
            elif channel == EVENTS_CHANNEL:
                run_id, first, last, origin = [*payload.split(":"), "", "", ""][:4]
                if origin == self.store.origin:
                    continue  # written here: already published when the write returned
                if first.isdigit() and last.isdigit():
                    self.bus.announce(run_id, int(first), int(last))

    def _command_sweep_seconds(self) -> float:
        """Once listening, commands from other processes are announced by notifications (on
        PostgreSQL and on a SQLite file alike); where they cannot be (an in-memory database,
        a system without local notifications), the sweep is what finds them."""
        if self.store.signals_processes and self._listening.is_set():
            return COMMAND_FALLBACK_SECONDS
        return COMMAND_POLL_SECONDS

    async def _queued(self, run_id: str) -> None:
        """A run became claimable: wake this process's worker and every other one."""
        self.wakeup.set()
        await self.store.notify(QUEUE_CHANNEL, run_id)

    async def _command(
        self, run_id: str, kind: str, actor: str | None, payload: dict[str, Any] | None = None
    ) -> None:
        await self.store.post_command(run_id, kind, payload=payload, actor=actor)
        self.executor.notice_command(run_id)  # claimed here a moment ago, not registered yet
        await self.store.notify(COMMANDS_CHANNEL, run_id)

    async def queue_stats(self) -> dict[str, Any]:
        """Queue depth by status and workflow, oldest queued run, workers and their leases."""
        return await self.store.queue_stats(alive_seconds=self.executor.lease_seconds)

    # -- agents and breakers ----------------------------------------------------------------------

    async def _seed_agents(self) -> None:
        """Register the agents of ``trellis.toml`` that are not registered yet."""
        for name, endpoint in self.settings.agents.items():
            if await self.store.get_agent(name) is None:
                with contextlib.suppress(Conflict):  # another process seeded it first
                    await self.register_agent(name, endpoint.spec_document())

    async def register_agent(
        self, name: str, spec: Mapping[str, Any], *, enabled: bool = True
    ) -> AgentRecord:
        """Register a new agent (``Conflict`` if the name is taken, ``ValidationError`` if the
        spec is invalid, naming the field)."""
        document = _agent_spec(name, spec)
        record = await self.store.create_agent(name, document, enabled=enabled)
        await self._agent_changed(name)
        return record

    async def update_agent(
        self, name: str, changes: Mapping[str, Any], *, replace: bool = False
    ) -> tuple[AgentRecord, bool]:
        """Change a registered agent: ``changes`` is a JSON merge patch (RFC 7386) of its spec —
        nested objects merge, ``null`` removes a field — or, with ``replace``, the whole spec.

        Concurrent updates do not lose each other's changes: each applies to the revision it
        read, and one that finds the agent changed meanwhile is merged again.
        """
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.get_agent(name)
            merged = dict(changes) if replace else merge_patch(current.spec, changes)
            try:
                record, changed = await self.store.update_agent(
                    name, spec=_agent_spec(name, merged), revision=current.revision
                )
            except Conflict:
                continue
            if changed:
                await self._agent_changed(name)
            return record, changed
        raise Conflict(f"agent {name!r} kept changing while this update was applied; try again")

    async def change_agent(
        self,
        name: str,
        changes: Mapping[str, Any],
        *,
        enabled: bool | None = None,
        replace: bool = False,
    ) -> tuple[AgentRecord, bool]:
        """:meth:`update_agent` with ``changes`` (when any, or ``replace``), then enable or disable
        it when ``enabled`` differs: ``(record, whether anything changed)``."""
        if changes or replace:
            record, changed = await self.update_agent(name, changes, replace=replace)
        else:
            record, changed = await self.get_agent(name), False
        if enabled is not None and enabled != record.enabled:
            record, changed = await self.set_agent_enabled(name, enabled), True
        return record, changed

    async def set_agent_enabled(self, name: str, enabled: bool) -> AgentRecord:
        record, changed = await self.store.update_agent(name, enabled=enabled)
        if changed:
            await self._agent_changed(name)
        return record

    async def get_agent(self, name: str) -> AgentRecord:
        record = await self.store.get_agent(name)
        if record is None:
            raise NotFound(f"no agent named {name!r} is registered", details={"agent": name})
        return record

    async def agent_health(self, name: str) -> dict[str, Any]:
        """Rolling success rate, p50/p95 latency and health of one agent, with its breaker."""
        record = await self.get_agent(name)
        report = await self.health.report(self.agents.agent(record), record.healthy, record.health_changed_at)
        breaker = await self.store.get_breaker(breaker_key("agent", name))
        report["breaker"] = None if breaker is None else breaker.state
        return report

    async def _agent_changed(self, name: str) -> None:
        self.agents.invalidate(name)
        await self.store.notify(AGENTS_CHANNEL, name)

    async def reset_breaker(self, key: str, *, actor: str | None = None) -> BreakerRecord:
        """Close a circuit by hand (``NotFound`` for a key no call has used)."""
        if await self.store.get_breaker(key) is None:
            raise NotFound(f"no circuit breaker {key!r}", details={"key": key})
        return await self.breakers.reset(key, actor=actor)

    async def preflight(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Why each of ``names`` cannot be relied on now (an empty list when all can)."""
        problems = []
        for name in names:
            record = await self.store.get_agent(name)
            breaker = await self.store.get_breaker(breaker_key("agent", name))
            reason = None
            if record is None:
                reason = "not registered"
            elif not record.enabled:
                reason = "disabled"
            elif not record.healthy:
                reason = "unhealthy"
            elif breaker is not None and breaker.state == "open":
                reason = "its circuit breaker is open"
            if reason is not None:
                problems.append({"agent": name, "reason": reason})
        return problems

    async def system_events(
        self, *, after: int = 0, limit: int = 100, type_prefix: str | None = None, subject: str | None = None
    ) -> list[SystemEvent]:
        """Events outside any run: ``breaker.*`` and ``agent.*``."""
        return await self.store.list_system_events(
            after=after, limit=limit, type_prefix=type_prefix, subject=subject
        )

    # -- workflows ------------------------------------------------------------------------------

    async def register(self, source: str | Mapping[str, Any], *, filename: str = "<input>") -> WorkflowRecord:
        """Validate and register a definition (YAML/JSON text or parsed data).

        Identical content is a no-op returning the existing version; changed content becomes
        the next version. Raises :class:`DefinitionError` listing every diagnostic.
        """
        if isinstance(source, str):
            document = load_document(source, filename)
            report = validate(document.data, document)
            data, text = document.data, source
        else:
            data, text = dict(source), None
            report = validate(data)
        if report.workflow is None:
            diagnostics = [d.to_dict() for d in report.diagnostics]
            errors = [d for d in report.diagnostics if d.severity == "error"]
            raise DefinitionError(
                f"{filename}: {len(errors)} error(s) in the definition; first: {errors[0].message}",
                details={"diagnostics": diagnostics},
            )
        record, _ = await self.store.put_workflow(
            name=report.workflow.name,
            hash=content_hash(data),
            kind="dsl",
            definition=data,
            source=text,
        )
        return record

    async def register_python(self, name: str) -> WorkflowRecord:
        """Register the Python workflow ``name`` (its version follows its source code)."""
        spec = self.registry.get_workflow(name)
        if spec is None:
            raise NotFound(f"no Python workflow named {name!r} is registered in this process")
        try:
            code = inspect.getsource(spec.build)
        except (OSError, TypeError):
            code = spec.build.__qualname__
        digest = "sha256:" + hashlib.sha256(code.encode()).hexdigest()
        record, _ = await self.store.put_workflow(
            name=name, hash=digest, kind="python", definition=None, source=code
        )
        return record

    async def resolve(self, ref: str) -> WorkflowRecord:
        """``name`` (latest) or ``name@version`` → the stored version."""
        name, _, version = ref.partition("@")
        if version and not version.isdigit():
            raise ValidationError(f"workflow reference {ref!r}: the version after @ must be an integer")
        record = await self.store.get_workflow(name, int(version) if version else None)
        if record is None and not version and self.registry.get_workflow(name) is not None:
            record = await self.register_python(name)
        if record is None:
            raise NotFound(f"workflow {ref!r} is not registered")
        return record

    async def compiled(self, run: RunRecord) -> CompiledWorkflow:
        """The graph a run is pinned to (its version and content hash, never "latest")."""
        cached = self.compiler.cached(run.workflow, run.version, run.hash)
        if cached is not None:
            return cached
        record = await self.store.get_workflow(run.workflow, run.version)
        if record is None or record.hash != run.hash:
            raise NotFound(f"run {run.id}: pinned workflow {run.workflow}@{run.version} ({run.hash}) is gone")
        if record.kind == "python":
            return self.compiler.compile_python(record.name, record.version, record.hash)
        assert record.definition is not None
        workflow = Workflow.model_validate(record.definition)
        return await self.compiler.compile(workflow, record.hash, version=record.version)

    async def _load_subworkflow(self, name: str, version: int) -> tuple[Workflow, str]:
        record = await self.store.get_workflow(name, version)
        if record is None or record.definition is None:
            raise NotFound(f"subworkflow {name}@{version} is not registered")
        return Workflow.model_validate(record.definition), record.hash

    # -- runs -----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        return run

    async def submit(
        self,
        workflow: str,
        run_input: Any = None,
        *,
        priority: int = 0,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        callback: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Create a queued run of ``workflow`` (``name`` or ``name@version``) after checking its input.

        ``callback`` (``{url, secret?, events?}``): where the run's final document (and, with
        ``events``, each event) is delivered; stored with the run, atomically.
        """
        record = await self.resolve(workflow)
        run_input = {} if run_input is None else run_input
        if record.definition is not None and record.definition.get("input"):
            run_input = check_input(record.definition["input"], run_input)
        run = await self.store.create_run(
            workflow=record.name,
            version=record.version,
            hash=record.hash,
            input=run_input,
            priority=priority,
            options=dict(options) if options else None,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            callback=callback,
            wake_channel=QUEUE_CHANNEL,  # other processes' workers, as _queued() tells them
        )
        self.wakeup.set()
        return run

    async def execute(self, run_id: str, *, follow_timers: bool = False) -> RunRecord:
        """Execute a run in this process until it ends or parks."""
        return await self.executor.execute(run_id, follow_timers=follow_timers)

    # -- state ----------------------------------------------------------------------------------

    async def state(self, run_id: str) -> dict[str, Any]:
        """The run's current state version: ``{checkpoint_id, step, created_at, next, values}``."""
        run = await self.get_run(run_id)
        compiled = await self.compiled(run)
        snapshot = await compiled.graph.aget_state({"configurable": {"thread_id": run_id}})
        return _version(snapshot)

    async def history(self, run_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every state version of the run, newest first (LangGraph's checkpoint history)."""
        run = await self.get_run(run_id)
        compiled = await self.compiled(run)
        config: RunnableConfig = {"configurable": {"thread_id": run_id}}
        return [_version(s) async for s in compiled.graph.aget_state_history(config, limit=limit)]

    async def diff(self, run_id: str, checkpoint_id: str, *, against: str | None = None) -> dict[str, Any]:
        """What changed in the state at ``checkpoint_id`` relative to ``against`` (default: its parent)."""
        versions = {v["checkpoint_id"]: v for v in await self.history(run_id)}
        target = versions.get(checkpoint_id)
        if target is None:
            raise NotFound(f"run {run_id} has no state version {checkpoint_id!r}")
        base_id = against or target["parent_checkpoint_id"]
        base = versions.get(base_id) if base_id else None
        if against is not None and base is None:
            raise NotFound(f"run {run_id} has no state version {against!r} to compare with")
        return {
            "run_id": run_id,
            "checkpoint_id": checkpoint_id,
            "against": base_id,
            "changes": diff(base["values"] if base else {}, target["values"]),
        }

    # -- commands ---------------------------------------------------------------------------------

    async def cancel(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Cancel a run; a running one stops at once, its running nodes end ``cancelled``."""
        run = await self.get_run(run_id)
        if run.status.terminal:
            raise Conflict(f"run {run_id} already {run.status.value}; it cannot be cancelled")
        local = self.executor.active.get(run_id)
        if local is not None:
            local.cancel(actor)
            return run
        if run.status == RunStatus.RUNNING:
            await self._command(run_id, "cancel", actor)
            return run
        changed = await self.store.transition_run(
            run_id,
            run.status.value,
            events=[NewEvent("run.cancelled", data={"by": actor})],
            status=RunStatus.CANCELLED.value,
            finished_at=datetime.now(UTC),
            parked=None,
            wake_at=None,
        )
        if changed is None:  # a worker claimed it meanwhile: cancel it where it runs
            return await self.cancel(run_id, actor=actor)
        cancelled, records = changed
        self.instruments.observer(run.workflow, run.started_at)(records)
        return cancelled

    async def pause(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Pause a running run at its next step boundary (or a queued one before it starts)."""
        run = await self.get_run(run_id)
        if run.status == RunStatus.QUEUED:
            paused = await self.store.transition_run(
                run_id,
                RunStatus.QUEUED.value,
                events=[NewEvent("run.paused", data={"by": actor})],
                status=RunStatus.PAUSED.value,
                parked={"kind": "paused"},
            )
            if paused is not None:
                return paused[0]
            run = await self.get_run(run_id)  # a worker claimed it meanwhile: pause it there
        if run.status != RunStatus.RUNNING:
            raise Conflict(f"run {run_id} is {run.status.value}; only a running or queued run can be paused")
        local = self.executor.active.get(run_id)
        if local is not None:
            local.pause()
        else:
            await self._command(run_id, "pause", actor)
        return run

    async def decide(
        self,
        run_id: str,
        *,
        approved: bool,
        actor: str | None = None,
        comment: str | None = None,
        data: Any = None,
        node: str | None = None,
    ) -> RunRecord:
        """Record an approval decision; the run becomes ``queued`` to continue from its gate."""
        run = await self.get_run(run_id)
        parked = dict(run.parked or {})
        gates = [i for i in parked.get("interrupts", []) if i.get("kind") == "approval"]
        decided = set(parked.get("resume") or {})
        open_gates = [g for g in gates if g["id"] not in decided]
        if run.status != RunStatus.WAITING or not open_gates:
            what = describe_parked(parked, run.wake_at) if parked else "nothing"
            raise Conflict(
                f"run {run_id} is {run.status.value} and not waiting for an approval (waiting for: {what})"
            )
        if node is not None:
            open_gates = [g for g in open_gates if g.get("node") == node]
            if not open_gates:
                names = ", ".join(str(g.get("node")) for g in gates)
                raise Conflict(f"run {run_id} has no open approval at node {node!r} (open: {names})")
        if len(open_gates) > 1:
            names = ", ".join(str(g.get("node")) for g in open_gates)
            raise Conflict(f"run {run_id} waits on several approvals ({names}); say which node")
        gate = open_gates[0]
        if approved:
            validate_decision_data(gate.get("form"), data, f"approval of node {gate.get('node')!r}")
        decision = {
            "outcome": "decided",
            "approved": approved,
            "by": actor,
            "comment": comment,
            "data": data,
            "decided_at": datetime.now(UTC).isoformat(),
        }
        parked["resume"] = {**(parked.get("resume") or {}), gate["id"]: decision}
        await self.store.post_command(
            run_id,
            "approve" if approved else "reject",
            payload={"node": gate.get("node"), **decision},
            actor=actor,
        )
        run = await self.store.update_run(run_id, status=RunStatus.QUEUED.value, parked=parked)
        await self._queued(run_id)
        return run

    async def resume(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Make a paused (or crashed, or stepping) run runnable again; returns it ``queued``."""
        run = await self.get_run(run_id)
        if run.status in (RunStatus.PAUSED, RunStatus.QUEUED):
            run = await self.store.update_run(run_id, status=RunStatus.QUEUED.value)
            await self._queued(run_id)
            return run
        if run.status in (RunStatus.RUNNING, RunStatus.WAITING):
            return run  # execute() decides: a dead lease or a due timer can be taken over
        raise Conflict(f"run {run_id} is {run.status.value}; there is nothing to resume")

    async def retry(self, run_id: str, *, actor: str | None = None) -> RunRecord:
        """Queue a failed run again; it continues from the node that failed (completed ones are kept)."""
        run = await self.get_run(run_id)
        if run.status != RunStatus.FAILED:
            raise Conflict(f"run {run_id} is {run.status.value}; only a failed run can be retried")
        await self.store.record(
            run_id,
            events=[
                NewEvent("run.queued", data={"reason": "retry", "by": actor, "previous_error": run.error})
            ],
            run={"status": RunStatus.QUEUED.value, "error": None, "finished_at": None, "parked": None},
        )
        await self._queued(run_id)
        return await self.get_run(run_id)

    async def rollback(self, run_id: str, checkpoint_id: str, *, actor: str | None = None) -> RunRecord:
        """Fork the run's state from an earlier version and queue it to continue from there.

        History is kept: the fork is a new version whose parent is ``checkpoint_id``, and every
        later version stays readable.
        """
        run = await self.get_run(run_id)
        if run.status == RunStatus.RUNNING:
            raise Conflict(f"run {run_id} is running; pause or cancel it before rolling back")
        compiled = await self.compiled(run)
        thread: RunnableConfig = {"configurable": {"thread_id": run_id}}
        async for snapshot in compiled.graph.aget_state_history(thread):
            if snapshot.config["configurable"].get("checkpoint_id") == checkpoint_id:
                break
        else:
            raise NotFound(f"run {run_id} has no state version {checkpoint_id!r}")
        # "__copy__" forks the version as it was (its pending next nodes included); a plain
        # update would be attributed to a node and, with Command routing, have no successor.
        forked = await compiled.graph.aupdate_state(snapshot.config, None, as_node="__copy__")
        await self.store.record(
            run_id,
            events=[
                NewEvent(
                    "run.queued",
                    data={
                        "reason": "rollback",
                        "by": actor,
                        "checkpoint_id": checkpoint_id,
                        "fork_checkpoint_id": forked["configurable"].get("checkpoint_id"),
                    },
                )
            ],
            run={
                "status": RunStatus.QUEUED.value,
                "output": None,
                "error": None,
                "finished_at": None,
                "parked": None,
                "wake_at": None,
            },
        )
        await self._queued(run_id)
        return await self.get_run(run_id)


def _version(snapshot: Any) -> dict[str, Any]:
    configurable = (snapshot.config or {}).get("configurable", {})
    metadata = snapshot.metadata or {}
    parent = (snapshot.parent_config or {}).get("configurable", {})
    return {
        "checkpoint_id": configurable.get("checkpoint_id"),
        "parent_checkpoint_id": parent.get("checkpoint_id"),
        "step": metadata.get("step"),
        "source": metadata.get("source"),
        "created_at": snapshot.created_at,
        "next": list(snapshot.next),
        "values": public_state(snapshot.values) if isinstance(snapshot.values, dict) else snapshot.values,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386)."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _agent_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The stored document of a valid agent spec, or a ``ValidationError`` naming the field."""
    try:
        check_name(name)
    except ValueError as exc:
        raise ValidationError(str(exc), details={"path": "/name"}) from None
    body = {k: v for k, v in spec.items() if k != "name"}
    try:
        return AgentSpec.model_validate(body).document()
    except PydanticValidationError as exc:
        errors = [
            {
                "path": "/" + "/".join(str(p) for p in e["loc"]),
                "message": e["msg"].removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        first = errors[0]
        raise ValidationError(
            f"agent {name!r}: {first['message']} at {first['path']}",
            details={"path": first["path"], "errors": errors},
        ) from None


def check_input(schema: Mapping[str, Any], run_input: Any) -> Any:
    """Validate run input against the workflow's input schema; the error names the JSON path.

    Returns the input with the schema's top-level ``default`` values filled in.
    """
    properties = schema.get("properties")
    if isinstance(run_input, dict) and isinstance(properties, dict):
        defaults = {k: p["default"] for k, p in properties.items() if isinstance(p, dict) and "default" in p}
        run_input = {**defaults, **run_input}
    violation = first_violation(schema, run_input)
    if violation is not None:
        path, message = violation
        raise ValidationError(f"run input at {path}: {message}", details={"path": path})
    return run_input
