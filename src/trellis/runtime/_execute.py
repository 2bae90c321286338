"""One execution of a run: claim it, drive the graph once through ``astream``, then finish or park.

The graph runs exactly once per execution (no second pass to fetch a result): node states
and events come from the stream, the output from the final ``values``. Checkpoints are
written with ``durability="sync"`` so a hard kill loses nothing that completed.

An execution holds the run's lease: every write carries the lease's fencing token, the lease
is extended while the run makes progress, and an execution whose lease was taken over (its
process stalled past the expiry) stops at once with :class:`LeaseLost` instead of advancing a
run that another worker now owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl
from langgraph.types import Command, StateSnapshot, StreamMode

from trellis.errors import Conflict, PreflightFailed, as_workflow_error
from trellis.nodes._context import SERVICES_KEY
from trellis.nodes.approval import wake_time
from trellis.runtime._recorder import Recorder
from trellis.runtime._tracker import RunTracker
from trellis.store import NewEvent, RunRecord
from trellis.store._queue import LEASE_EXPIRED
from trellis.types import RunStatus

if TYPE_CHECKING:
    from trellis.compiler import CompiledWorkflow
    from trellis.runtime._engine import Engine

log = logging.getLogger(__name__)

STREAM_MODES: list[StreamMode] = ["tasks", "updates", "custom", "values"]
"""What a run's graph streams: ``custom`` carries the node wrapper's lifecycle events, ``updates``
interrupts and replayed writes, ``values`` the final state, and ``tasks`` the node starts and
results of graphs whose nodes Trellis did not wrap (Python workflows)."""
WRAPPED_STREAM_MODES: list[StreamMode] = ["updates", "custom", "values"]
"""The same for a graph of wrapped nodes (every DSL workflow): they report their own lifecycle."""
COMMAND_POLL_SECONDS = 0.2
"""How often a process looks for commands that no notification can announce (SQLite: a CLI in
another process posted them), with one query for all the runs it holds."""
COMMAND_FALLBACK_SECONDS = 2.0
"""The same where notifications announce commands (PostgreSQL): a fallback for one that was lost."""
EARLY_NOTICE_SECONDS = 10.0
"""How long a command notification for a run not registered here yet is kept for it: a run
claimed by this worker a moment before is registered only once its first state is read."""
WATCHER_STOP_SECONDS = 2.0
"""How long an ending execution lets its watcher finish a query before cancelling it."""
SHUTDOWN = "shutdown"
"""Drain reason of a stopping worker: the run goes back to the queue rather than to ``paused``."""


class LeaseLost(Exception):
    """Another worker claimed the run (this process's lease expired); this execution stopped."""


def now() -> datetime:
    return datetime.now(UTC)


def new_owner_id() -> str:
    """Identity of this process as a lease holder: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def lease_is_dead(owner: str | None, expires_at: datetime | None) -> bool:
    """True when nobody holds the lease: expired, or held by a process on this host that is gone."""
    if owner is None or expires_at is None or expires_at <= now():
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@dataclass
class Execution:
    """A run being driven by this process; commands reach it through here."""

    run_id: str
    token: int
    control: RunControl = field(default_factory=RunControl)
    task: asyncio.Task[Any] | None = None
    cancel_requested: str | None = None
    """Who asked for cancellation, once someone did."""
    lease_lost: bool = False
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a command for this run may be waiting (a notification arrived)."""
    finished: bool = False
    """Set when the execution ended: its watcher stops at its next turn."""
    valid_until: float = 0.0
    """Monotonic time until which no other worker can have claimed the run: the lease's expiry
    as last confirmed, less a margin for clock differences between machines."""

    def extend(self, lease_seconds: float, since: float | None = None) -> None:
        """The lease was set to expire ``lease_seconds`` after ``since`` (monotonic; default now)."""
        start = time.monotonic() if since is None else since
        self.valid_until = start + lease_seconds - min(5.0, lease_seconds / 3)

    def surely_held(self) -> bool:
        """True while the lease cannot have expired; writes then need no database check."""
        return not self.lease_lost and time.monotonic() < self.valid_until

    def cancel(self, actor: str | None) -> None:
        self.cancel_requested = actor or "unknown"
        if self.task is not None:
            self.task.cancel()

    def pause(self, reason: str = "pause") -> None:
        self.control.request_drain(reason)

    def lose_lease(self) -> None:
        self.lease_lost = True
        if self.task is not None:
            self.task.cancel()

    def lose_lease_quietly(self) -> None:
        """The fence refused a write: the graph fails on its own, no cancellation needed."""
        self.lease_lost = True


class Executor:
    """Drives executions for an :class:`~trellis.runtime.Engine`."""

    def __init__(self, engine: Engine, lease_seconds: float = 30.0) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.active: dict[str, Execution] = {}
        self._early: dict[str, float] = {}
        """Runs announced to have commands before they were registered here (monotonic time)."""

    def notice_command(self, run_id: str) -> None:
        """A command may be waiting for ``run_id``: wake its watcher, now or once it registers."""
        execution = self.active.get(run_id)
        if execution is not None:
            execution.poke.set()
            return
        horizon = time.monotonic() - EARLY_NOTICE_SECONDS
        for stale in [r for r, at in self._early.items() if at < horizon]:
            del self._early[stale]
        self._early[run_id] = time.monotonic()

    def notice_all(self) -> None:
        """Commands may have been missed (notifications were down): every watcher looks."""
        for execution in self.active.values():
            execution.poke.set()

    async def sweep_commands(self, interval: Callable[[], float]) -> None:
        """Forever: every ``interval()`` seconds, wake the watchers of the runs held here that have
        commands pending. One query per sweep, however many runs this process holds."""
        while True:
            await asyncio.sleep(interval())
            if not self.active:
                continue
            try:
                pending = await self.engine.store.runs_with_pending_commands(list(self.active))
            except Exception as exc:  # the database is away: the next sweep tries again
                log.warning("could not look for pending commands: %s", exc)
                continue
            for run_id in pending:
                self.notice_command(run_id)

    async def claim(self, run_id: str) -> RunRecord:
        """Take one run for execution here, or say precisely why it cannot be taken."""
        run = await self.engine.get_run(run_id)
        if run.status.terminal:
            raise Conflict(f"run {run_id} already {run.status.value}; nothing to execute")
        if run.status == RunStatus.RUNNING and not lease_is_dead(run.lease_owner, run.lease_expires_at):
            raise Conflict(
                f"run {run_id} is being executed by {run.lease_owner} (lease until "
                f"{run.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
        parked = run.parked or {}
        taken_over = run.status == RunStatus.RUNNING  # its holder's lease is dead (checked above)
        timer_due = run.wake_at is not None and run.wake_at <= now()
        if run.status == RunStatus.WAITING and not parked.get("resume") and not timer_due:
            raise Conflict(f"run {run_id} is waiting: {describe_parked(parked, run.wake_at)}")
        if run.status == RunStatus.PAUSED:
            raise Conflict(f"run {run_id} is paused; resume it first")
        claimed = await self.engine.store.claim_run(
            run_id,
            owner=self.engine.owner,
            expected_token=run.lease_token,
            expected_status=run.status.value,
            lease_seconds=self.lease_seconds,
            fields={"parked": dict(LEASE_EXPIRED)} if taken_over else None,
        )
        if claimed is None:
            raise Conflict(f"run {run_id} changed while it was being claimed (another worker took it)")
        return claimed

    async def execute(self, run_id: str, *, follow_timers: bool = False) -> RunRecord:
        """Execute until the run ends or parks; with ``follow_timers``, sleep through ``wait`` nodes."""
        while True:
            run = await self.execute_claimed(await self.claim(run_id))
            if not (follow_timers and run.status == RunStatus.WAITING and run.wake_at is not None):
                return run
            if any(i.get("kind") != "wait" for i in (run.parked or {}).get("interrupts", [])):
                return run
            changed = await self._sleep_until(run)
            if changed is not None:
                return changed

    async def _sleep_until(self, run: RunRecord) -> RunRecord | None:
        """Wait for a parked run's timer; the run as it became if someone acted on it meanwhile."""
        assert run.wake_at is not None
        while (remaining := (run.wake_at - now()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, COMMAND_POLL_SECONDS))
            current = await self.engine.get_run(run.id)
            if current.status != RunStatus.WAITING or current.updated_at != run.updated_at:
                return current
        return None

    async def execute_claimed(self, run: RunRecord) -> RunRecord:
        """Drive a run this process holds the lease of, until it ends, parks or is handed back;
        the run as it then is."""
        await self.run_claimed(run)
        return await self.engine.get_run(run.id)

    async def run_claimed(self, run: RunRecord) -> None:
        """:meth:`execute_claimed` without reading the run back (the queue's workers need not)."""
        engine = self.engine
        compiled = await engine.compiled(run)
        execution = Execution(run.id, token=run.lease_token)
        if run.lease_expires_at is not None:
            execution.extend((run.lease_expires_at - now()).total_seconds())
        recorder = Recorder(engine.store, run.id, lease_token=run.lease_token)
        recorder.fence_needed = lambda: not execution.surely_held()
        recorder.on_failure = lambda exc: execution.lose_lease() if isinstance(exc, Conflict) else None
        recorder.observe = engine.instruments.observer(run.workflow, run.started_at)
        declared = compiled.definition.preflight if compiled.definition is not None else None
        if run.started_at is None and declared and await self._preflight(run, declared, recorder):
            return
        tracker = RunTracker(
            run.id,
            run.input,
            recorder,
            [] if run.started_at is None else await engine.store.list_node_states(run.id),
            wraps_nodes=compiled.wraps_nodes,
        )
        config: RunnableConfig = {
            "configurable": {"thread_id": run.id, SERVICES_KEY: tracker},
            "recursion_limit": 100_000,
        }
        graph_input = await self._start(compiled, config, run, recorder)
        self.active[run.id] = execution
        if self._early.pop(run.id, None) is not None:
            execution.poke.set()
        engine.saver.guard(run.id, run.lease_token, execution.lose_lease_quietly, execution.surely_held)
        execution.task = asyncio.create_task(
            self._drive(compiled, graph_input, config, tracker, execution.control, run)
        )
        watcher = asyncio.create_task(self._watch(run, execution))
        try:
            outcome = await self._outcome(execution, tracker, compiled, config, run)
        except BaseException:
            await recorder.abandon()
            raise
        finally:
            # Stop the watcher between its queries, never inside one: cancelling a query
            # in flight makes psycopg close the pooled connection.
            execution.finished = True
            execution.poke.set()
            engine.saver.release(run.id)
            self.active.pop(run.id, None)
            _, stuck = await asyncio.wait({watcher}, timeout=WATCHER_STOP_SECONDS)
            if stuck:  # blocked on the database (e.g. a heartbeat that cannot get through)
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        recorder.add(outcome.event, run=outcome.run_fields)
        try:
            await recorder.close()
        except Conflict as exc:
            raise LeaseLost(f"run {run.id}: {exc.message}") from exc

    async def _preflight(self, run: RunRecord, agents: list[str], recorder: Recorder) -> bool:
        """Fail a new run at once when an agent it declares in ``preflight`` cannot be relied on;
        whether it did."""
        problems = await self.engine.preflight(agents)
        if not problems:
            return False
        reasons = "; ".join(f"{p['agent']}: {p['reason']}" for p in problems)
        error = PreflightFailed(
            f"run {run.id} not started: preflight found agents it cannot rely on ({reasons})",
            details={"agents": problems},
        )
        problem = error.to_problem(instance=f"/runs/{run.id}")
        finished = now()
        recorder.add(NewEvent("run.started"), run={"started_at": finished})
        recorder.add(
            NewEvent("run.failed", data={"error": problem}),
            run={"status": RunStatus.FAILED.value, "error": problem, "finished_at": finished, **_released()},
        )
        try:
            await recorder.close()
        except Conflict as exc:
            raise LeaseLost(f"run {run.id}: {exc.message}") from exc
        return True

    async def _start(
        self, compiled: CompiledWorkflow, config: RunnableConfig, run: RunRecord, recorder: Recorder
    ) -> Any:
        """The graph input for this execution, and its first events."""
        # A run that never started has no checkpoint: skip the read.
        fresh = run.started_at is None or (await compiled.graph.aget_state(config)).created_at is None
        parked = dict(run.parked or {})
        if parked.get("interrupts") and not parked.get("resume"):
            parked["resume"] = timer_resume(parked)  # claimed because its timer is due
        if fresh:
            recorder.add(NewEvent("run.started"), run={"started_at": now()})
            graph_input = compiled.initial_input(run.input)
        else:
            resume = parked.get("resume")
            graph_input = Command(resume=resume) if resume else None
            reason = "decision" if parked.get("kind") == "approval" else parked.get("kind", "checkpoint")
            recorder.add(NewEvent("run.resumed", data={"from": reason, "resume": resume}))
        recorder.add(run={"parked": None, "wake_at": None})
        try:
            await recorder.flush()
        except Conflict as exc:
            raise LeaseLost(f"run {run.id}: {exc.message}") from exc
        recorder.start()
        return graph_input

    async def _drive(
        self,
        compiled: CompiledWorkflow,
        graph_input: Any,
        config: RunnableConfig,
        tracker: RunTracker,
        control: RunControl,
        run: RunRecord,
    ) -> None:
        step: Literal["*"] | None = "*" if (run.options or {}).get("step") else None
        # This task's own context: the process's JSON logs name the run (nodes add node, attempt).
        structlog.contextvars.bind_contextvars(run_id=run.id, workflow=run.workflow)
        async for namespace, mode, chunk in compiled.graph.astream(
            graph_input,
            config,
            stream_mode=WRAPPED_STREAM_MODES if compiled.wraps_nodes else STREAM_MODES,
            subgraphs=True,
            durability="sync",
            control=control,
            interrupt_before=step,
        ):
            if tracker.on_chunk(tuple(namespace), str(mode), chunk):
                await tracker.recorder.flush()

    async def _outcome(
        self,
        execution: Execution,
        tracker: RunTracker,
        compiled: CompiledWorkflow,
        config: RunnableConfig,
        run: RunRecord,
    ) -> _Outcome:
        assert execution.task is not None
        try:
            await asyncio.shield(execution.task)
        except GraphDrained:
            if execution.control.drain_reason == SHUTDOWN:
                return _Outcome(
                    NewEvent("run.queued", data={"reason": "worker stopping", "worker": self.engine.owner}),
                    {"status": RunStatus.QUEUED.value, **_released()},
                )
            return _Outcome(
                NewEvent("run.paused", data={"reason": "requested"}),
                {"status": RunStatus.PAUSED.value, "parked": {"kind": "paused"}, **_released()},
            )
        except asyncio.CancelledError:
            if execution.lease_lost:
                raise LeaseLost(f"run {run.id}: another worker claimed it; this execution stopped") from None
            if execution.cancel_requested is None:
                execution.task.cancel()  # this process is stopping: leave the run resumable
                await asyncio.gather(execution.task, return_exceptions=True)
                raise
            cancelled = tracker.cancel_active()
            return _Outcome(
                NewEvent("run.cancelled", data={"by": execution.cancel_requested, "nodes": cancelled}),
                {"status": RunStatus.CANCELLED.value, "finished_at": now(), **_released()},
            )
        except Exception as exc:
            if execution.lease_lost:
                raise LeaseLost(f"run {run.id}: another worker claimed it; this execution stopped") from exc
            problem = as_workflow_error(exc).to_problem(instance=f"/runs/{run.id}")
            return _Outcome(
                NewEvent("run.failed", node=problem.get("node"), data={"error": problem}),
                {"status": RunStatus.FAILED.value, "error": problem, "finished_at": now(), **_released()},
            )
        # A graph that streamed no interrupt ran to its end: its last ``values`` chunk is the final
        # state, and the checkpoint need not be read back.
        values = tracker.values
        if tracker.interrupted or values is None:
            snapshot = await compiled.graph.aget_state(config)
            parked = self._parked(snapshot)
            if parked is not None:
                return parked
            if values is None:
                values = snapshot.values
        return self._finished(compiled, values, run)

    @staticmethod
    def _parked(snapshot: StateSnapshot) -> _Outcome | None:
        """The outcome of a graph that stopped before its end (an interrupt or a step);
        ``None`` when it did reach its end after all."""
        if snapshot.interrupts:
            parked_at = now()
            interrupts = [{"id": i.id, **_as_dict(i.value)} for i in snapshot.interrupts]
            wakes = [w for i in interrupts if (w := wake_time(i, parked_at)) is not None]
            kind = "approval" if any(i.get("kind") == "approval" for i in interrupts) else "wait"
            parked = {"kind": kind, "interrupts": interrupts, "parked_at": parked_at.isoformat()}
            return _Outcome(
                NewEvent("run.waiting", node=interrupts[0].get("node"), data=parked),
                {
                    "status": RunStatus.WAITING.value,
                    "parked": parked,
                    "wake_at": min(wakes) if wakes else None,
                    **_released(),
                },
            )
        if snapshot.next:
            parked = {"kind": "step", "next": list(snapshot.next)}
            return _Outcome(
                NewEvent("run.paused", data=parked),
                {"status": RunStatus.PAUSED.value, "parked": parked, **_released()},
            )
        return None

    @staticmethod
    def _finished(compiled: CompiledWorkflow, values: Any, run: RunRecord) -> _Outcome:
        """The outcome of a graph that ran to its end with the final state ``values``."""
        try:
            output = compiled.final_output(values, run.input)
        except Exception as exc:
            problem = as_workflow_error(exc).to_problem(instance=f"/runs/{run.id}")
            return _Outcome(
                NewEvent("run.failed", data={"error": problem}),
                {"status": RunStatus.FAILED.value, "error": problem, "finished_at": now(), **_released()},
            )
        return _Outcome(
            NewEvent("run.succeeded"),
            {"status": RunStatus.SUCCEEDED.value, "output": output, "finished_at": now(), **_released()},
        )

    async def _watch(self, run: RunRecord, execution: Execution) -> None:
        """Extend the lease while the run makes progress; act on commands for it."""
        store = self.engine.store
        beat_every = self.lease_seconds / 3
        last_beat = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    execution.poke.wait(), max(0.0, last_beat + beat_every - time.monotonic())
                )
            poked = execution.poke.is_set()
            execution.poke.clear()
            if execution.finished:
                return
            if poked:  # by a notification, the process's sweep, or a command posted here
                for command in await store.pending_commands(run.id):
                    if command.kind == "cancel":
                        execution.cancel(command.actor)
                    elif command.kind == "pause":
                        execution.pause()
                    else:
                        continue
                    await store.consume_command(command.id)
            if time.monotonic() - last_beat >= beat_every:
                last_beat = time.monotonic()
                if not await store.heartbeat_lease(run.id, execution.token, lease_seconds=self.lease_seconds):
                    log.warning("run %s: lease taken over by another worker; stopping here", run.id)
                    execution.lose_lease()
                    return
                execution.extend(self.lease_seconds, since=last_beat)


@dataclass(frozen=True)
class _Outcome:
    event: NewEvent
    run_fields: dict[str, Any]


def _released() -> dict[str, Any]:
    return {"lease_owner": None, "lease_expires_at": None}


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"value": value}


def timer_resume(parked: dict[str, Any]) -> dict[str, Any]:
    """Resume values for interrupts whose timer is due: waits elapse, approvals time out."""
    due = now()
    values: dict[str, Any] = {}
    parked_at = datetime.fromisoformat(parked["parked_at"]) if "parked_at" in parked else due
    for item in parked.get("interrupts", []):
        wake = wake_time(item, parked_at)
        if wake is None or wake > due:
            continue
        if item.get("kind") == "wait":
            values[item["id"]] = {"outcome": "elapsed", "at": due.isoformat()}
        elif item.get("kind") == "approval":
            values[item["id"]] = {"outcome": "timeout", "decided_at": due.isoformat()}
    return values


def describe_parked(parked: dict[str, Any], wake_at: datetime | None) -> str:
    """What a waiting run waits for, in words."""
    parts = []
    for item in parked.get("interrupts", []):
        if item.get("kind") == "approval":
            parts.append(f"approval of node {item.get('node')!r} ({item.get('title')})")
        elif item.get("kind") == "wait":
            parts.append(f"timer of wait node {item.get('node')!r}")
    text = " and ".join(parts) or parked.get("kind", "an event")
    if wake_at is not None:
        text += f"; its timer fires at {wake_at:%Y-%m-%d %H:%M:%S} UTC"
    return text
