"""The scheduler: turns due cron ticks into runs, exactly once per tick across processes.

Every ``serve`` and ``worker`` process runs one. A pass reads the enabled schedules whose
``next_fire_at`` is due and, for each:

1. works out which ticks are due — those up to ``grace_seconds`` late are *on time*; older ones
   were *missed* (no process was running) and follow the schedule's ``missed`` policy: ``skip``
   drops them, ``run_once`` starts one run for all of them (for the latest);
2. starts the runs, each under the idempotency key ``trigger:<schedule>:<tick>``;
3. moves ``next_fire_at`` to the first tick after now by compare-and-set on the tick it read.

Two schedulers racing for a tick both try step 2; the key lets exactly one run be created, and
step 3 succeeds for one of them. A crash between 2 and 3 leaves the tick due: the next pass
finds its run by the key and only advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from trellis.dsl._cron import ticks_after
from trellis.errors import Conflict, WorkflowError
from trellis.runtime import Engine
from trellis.store import RunRecord, TriggerRecord
from trellis.store.records import iso
from trellis.triggers._specs import check_trigger
from trellis.triggers._start import start_run

log = logging.getLogger("trellis.triggers")

GRACE_SECONDS: Final = 60.0
"""A tick started within this long after its time is on time; a later one was missed."""
MAX_CATCH_UP: Final = 1000
"""Most ticks looked at in one pass (a per-second cron after a long downtime)."""

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def first_tick(spec: dict[str, Any] | Any, after: datetime) -> datetime:
    """The first tick of a schedule spec strictly after ``after``."""
    return next(ticks_after(spec["cron"], spec["timezone"], after))


class Scheduler:
    """Starts the runs of due schedules; see the module docstring for the guarantees."""

    def __init__(
        self,
        engine: Engine,
        *,
        poll_seconds: float = 1.0,
        grace_seconds: float = GRACE_SECONDS,
        clock: Clock = _utcnow,
    ) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.clock = clock

    def __repr__(self) -> str:
        return f"Scheduler(poll_seconds={self.poll_seconds}, grace_seconds={self.grace_seconds})"

    async def run(self, stop: asyncio.Event) -> None:
        """Pass over the due schedules every ``poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def tick(self, now: datetime | None = None) -> list[RunRecord]:
        """One pass at ``now`` (default: the clock); the runs it created."""
        now = now or self.clock()
        created: list[RunRecord] = []
        for schedule in await self.engine.store.due_schedules(now=now):
            created.extend(await self._fire(schedule, now))
        return created

    async def _fire(self, schedule: TriggerRecord, now: datetime) -> list[RunRecord]:
        spec = dict(schedule.spec)
        due = schedule.next_fire_at
        assert due is not None
        ticks: list[datetime] = []
        following: datetime | None = None
        candidates = ticks_after(spec["cron"], spec["timezone"], due)
        tick = due
        while tick <= now and len(ticks) < MAX_CATCH_UP:
            ticks.append(tick)
            tick = next(candidates)
        following = tick if tick > now else first_tick(spec, now)
        on_time = [t for t in ticks if (now - t).total_seconds() <= self.grace_seconds]
        missed = [t for t in ticks if t not in on_time]
        fire = on_time
        if missed and not on_time and spec.get("missed") == "run_once":
            fire = [missed[-1]]
        if missed:
            log.info(
                "schedule %s: %d tick(s) missed since %s (%s)",
                schedule.name,
                len(missed),
                iso(missed[0]),
                "one run for them" if fire and fire[0] in missed else "skipped",
            )
        created: list[RunRecord] = []
        last_run_id, error = schedule.last_run_id, None
        for tick in fire:
            source = {"tick": iso(tick)}
            if tick in missed:
                source["missed_ticks"] = len(missed)  # type: ignore[assignment]
            try:
                run, new = await start_run(
                    self.engine, schedule, spec.get("input") or {}, delivery=iso(tick) or "", source=source
                )
            except WorkflowError as exc:
                log.warning("schedule %s: tick %s started no run: %s", schedule.name, iso(tick), exc.message)
                error = exc.to_problem()
                continue
            last_run_id = run.id
            if new:
                created.append(run)
        await self.engine.store.advance_schedule(
            schedule.name,
            expected=due,
            next_fire_at=following,
            last_fire_at=fire[-1] if fire else schedule.last_fire_at,
            last_run_id=last_run_id,
            last_error=error,
        )
        return created

    # -- schedules declared by workflows -------------------------------------------------------

    async def sync_workflow_schedules(self) -> None:
        """Make the ``schedules`` of every workflow's latest version the stored schedules.

        New ones start at their first tick after now; changed ones keep their pause state
        (and their next tick unless the cron or time zone changed); ones no longer declared are
        deleted. Schedules created by REST, the CLI or ``trellis.toml`` are not touched.
        """
        store = self.engine.store
        desired: dict[str, tuple[str, dict[str, Any]]] = {}
        for workflow in await store.list_workflows():
            declared = (workflow.definition or {}).get("schedules") or []
            for index, entry in enumerate(declared, start=1):
                name = entry.get("name") or f"{workflow.name}-schedule-{index}"
                desired[name] = (
                    f"{workflow.name}@{workflow.version}",
                    check_trigger(name, "schedule", entry),
                )
        await sync_schedules(self.engine, desired, origin="workflow", now=self.clock())


async def sync_schedules(
    engine: Engine, desired: dict[str, tuple[str, dict[str, Any]]], *, origin: str, now: datetime
) -> None:
    """Create, update and delete the ``schedule`` triggers of one ``origin`` to match ``desired``."""
    store = engine.store
    existing = {t.name: t for t in await store.list_triggers(kind="schedule")}
    for name, (workflow, spec) in desired.items():
        current = existing.get(name)
        if current is None:
            with contextlib.suppress(Conflict):  # another process may create it first
                await store.create_trigger(
                    name=name,
                    kind="schedule",
                    workflow=workflow,
                    spec=spec,
                    origin=origin,
                    next_fire_at=first_tick(spec, now),
                )
        elif current.origin != origin:
            log.warning(
                "schedule %s is declared by %s and %s; keeping the first", name, current.origin, origin
            )
        elif current.workflow != workflow or dict(current.spec) != spec:
            retimed = (current.spec.get("cron"), current.spec.get("timezone")) != (
                spec["cron"],
                spec["timezone"],
            )
            fields: dict[str, Any] = {"workflow": workflow, "spec": spec}
            if retimed:
                fields["next_fire_at"] = first_tick(spec, now)
            await store.update_trigger(name, **fields)
    for name, current in existing.items():
        if current.origin == origin and name not in desired:
            await store.delete_trigger(name)
