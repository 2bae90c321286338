"""The trigger service: everything that starts or follows runs from outside, in one process.

``trellis serve`` and ``trellis worker`` each run one :class:`TriggerService`. It runs the
:class:`~trellis.triggers.Scheduler`, the :class:`~trellis.triggers.CallbackDispatcher`, one
:class:`~trellis.triggers.EventPublisher` per configured publisher, and one consumer per
enabled ``nats`` / ``redis`` trigger (re-read from the store every ``sync_seconds``, so
triggers registered over REST start being consumed without a restart). Several processes may
run it at once: schedules are exactly once per tick, the dispatcher and each publisher work
under a lease, and bus consumers share their durable consumer / consumer group.

Configuration (``trellis.toml``)::

    [triggers.orders]                     # a trigger owned by the file (origin "config")
    kind = "nats"                         # schedule | webhook | nats | redis
    workflow = "process-order"
    stream = "ORDERS"
    subject = "orders.created"
    input = '{"order": body}'             # CEL over the payload; default: the payload

    [publishers.bus]                      # publish run and node events
    kind = "nats"
    url = "nats://127.0.0.1:4222"
    subject = "trellis.events"
    stream = "TRELLIS_EVENTS"

    [callbacks]
    secret = "env:TRELLIS_CALLBACK_SECRET"  # signs callbacks that name no secret of their own
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trellis.config import Settings
from trellis.errors import Conflict, NotFound, WorkflowError
from trellis.runtime import Engine
from trellis.store import TriggerRecord
from trellis.triggers._callbacks import CallbackDispatcher
from trellis.triggers._consumers import consumer_for
from trellis.triggers._publisher import EventPublisher, PublisherSpec
from trellis.triggers._scheduler import Scheduler, first_tick, sync_schedules
from trellis.triggers._specs import check_secret_reference, check_trigger

log = logging.getLogger("trellis.triggers")


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    """What a :class:`TriggerService` runs, and how often it looks."""

    triggers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[triggers.<name>]`` tables: ``kind``, ``workflow``, ``enabled`` and the kind's fields."""
    publishers: Mapping[str, PublisherSpec] = field(default_factory=dict)
    callback_secret: str | None = None
    """Secret reference signing callbacks that name none (``[callbacks] secret``)."""
    poll_seconds: float = 1.0
    sync_seconds: float = 10.0
    """How often workflow schedules and bus triggers are re-read from the store."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TriggerSettings:
        """The ``[triggers]``, ``[publishers]`` and ``[callbacks]`` tables of ``settings``' file."""
        if settings.source is None:
            return cls()
        with Path(settings.source).open("rb") as fh:
            raw = tomllib.load(fh)
        callbacks = dict(raw.get("callbacks", {}))
        secret = callbacks.get("secret")
        return cls(
            triggers={name: dict(table) for name, table in dict(raw.get("triggers", {})).items()},
            publishers={
                name: PublisherSpec(**{**table, "types": tuple(table.get("types", ("run.", "node.")))})
                for name, table in dict(raw.get("publishers", {})).items()
            },
            callback_secret=None if secret is None else check_secret_reference(str(secret)),
        )


class TriggerService:
    """Runs the scheduler, the callback dispatcher, the publishers and the bus consumers."""

    def __init__(self, engine: Engine, settings: TriggerSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or TriggerSettings()
        self.scheduler = Scheduler(engine, poll_seconds=self.settings.poll_seconds)
        self.dispatcher = CallbackDispatcher(
            engine, secret=self.settings.callback_secret, poll_seconds=self.settings.poll_seconds
        )
        self.publishers = [
            EventPublisher(engine, name, spec, poll_seconds=self.settings.poll_seconds)
            for name, spec in self.settings.publishers.items()
        ]
        self.consumers: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"TriggerService(publishers={len(self.publishers)}, consumers={sorted(self.consumers)})"

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run everything until :meth:`request_stop`."""
        stop = self._stop
        await sync_config_triggers(self.engine, self.settings.triggers)
        tasks = [
            asyncio.create_task(self.scheduler.run(stop), name="trellis-scheduler"),
            asyncio.create_task(self.dispatcher.run(stop), name="trellis-callbacks"),
            *(asyncio.create_task(p.run(stop), name=f"trellis-publisher-{p.name}") for p in self.publishers),
        ]
        try:
            while not stop.is_set():
                try:
                    await self.scheduler.sync_workflow_schedules()
                    await self._sync_consumers(stop)
                except Exception:
                    log.exception("could not sync triggers; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.sync_seconds)
        finally:
            stop.set()
            for _, task in self.consumers.values():
                task.cancel()
            await asyncio.gather(*tasks, *(t for _, t in self.consumers.values()), return_exceptions=True)
            self.consumers.clear()

    async def _sync_consumers(self, stop: asyncio.Event) -> None:
        wanted: dict[str, TriggerRecord] = {}
        for kind in ("nats", "redis"):
            for trigger in await self.engine.store.list_triggers(kind=kind):
                if trigger.enabled:
                    wanted[trigger.name] = trigger
        for name, (fingerprint, task) in list(self.consumers.items()):
            current = wanted.get(name)
            if current is None or _fingerprint(current) != fingerprint or task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                del self.consumers[name]
        for name, trigger in wanted.items():
            if name not in self.consumers:
                task = asyncio.create_task(self._consume(trigger, stop), name=f"trellis-consumer-{name}")
                self.consumers[name] = (_fingerprint(trigger), task)

    async def _consume(self, trigger: TriggerRecord, stop: asyncio.Event) -> None:
        try:
            await consumer_for(self.engine, trigger).run(stop)
        except Exception:  # restarted by the next sync
            log.exception("trigger %s: consumer stopped", trigger.name)


def _fingerprint(trigger: TriggerRecord) -> str:
    return json.dumps([trigger.workflow, dict(trigger.spec)], sort_keys=True, default=str)


# -- managing triggers (REST, CLI, configuration) ---------------------------------------------------


async def create_trigger(
    engine: Engine,
    name: str,
    kind: str,
    workflow: str,
    spec: Mapping[str, Any],
    *,
    enabled: bool = True,
    origin: str = "api",
) -> TriggerRecord:
    """Validate and store a trigger (``Conflict`` if the name is taken, ``NotFound`` for an
    unknown workflow, ``ValidationError`` naming the offending field)."""
    document = check_trigger(name, kind, spec)
    await engine.resolve(workflow)
    next_fire = first_tick(document, datetime.now(UTC)) if kind == "schedule" else None
    return await engine.store.create_trigger(
        name=name,
        kind=kind,
        workflow=workflow,
        spec=document,
        origin=origin,
        enabled=enabled,
        next_fire_at=next_fire,
    )


async def get_trigger(engine: Engine, name: str, kind: str | None = None) -> TriggerRecord:
    trigger = await engine.store.get_trigger(name)
    if trigger is None or (kind is not None and trigger.kind != kind):
        what = f"{kind} trigger" if kind else "trigger"
        raise NotFound(f"no {what} named {name!r}", details={"trigger": name})
    return trigger


async def set_enabled(engine: Engine, name: str, enabled: bool, *, kind: str | None = None) -> TriggerRecord:
    """Pause or resume a trigger. A resumed schedule continues from its next tick after now:
    ticks that passed while it was paused are not made up."""
    trigger = await get_trigger(engine, name, kind)
    fields: dict[str, Any] = {"enabled": enabled}
    if enabled and not trigger.enabled and trigger.kind == "schedule":
        fields["next_fire_at"] = first_tick(trigger.spec, datetime.now(UTC))
    return await engine.store.update_trigger(name, **fields)


async def delete_trigger(engine: Engine, name: str) -> None:
    trigger = await get_trigger(engine, name)
    if trigger.origin != "api":
        raise Conflict(
            f"trigger {name!r} is declared by its {trigger.origin}; remove it there",
            details={"trigger": name, "origin": trigger.origin},
        )
    await engine.store.delete_trigger(name)


async def sync_config_triggers(engine: Engine, tables: Mapping[str, Mapping[str, Any]]) -> None:
    """Make the ``[triggers.<name>]`` tables of ``trellis.toml`` the stored ``config`` triggers."""
    schedules: dict[str, tuple[str, dict[str, Any]]] = {}
    others: dict[str, tuple[str, str, dict[str, Any], bool]] = {}
    for name, table in tables.items():
        body = dict(table)
        kind, workflow = str(body.pop("kind", "")), str(body.pop("workflow", ""))
        enabled = bool(body.pop("enabled", True))
        try:
            spec = check_trigger(name, kind, body)
        except WorkflowError as exc:
            log.error("trellis.toml [triggers.%s]: %s", name, exc.message)
            continue
        if kind == "schedule":
            schedules[name] = (workflow, spec)
        else:
            others[name] = (kind, workflow, spec, enabled)
    await sync_schedules(engine, schedules, origin="config", now=datetime.now(UTC))
    store = engine.store
    existing = {t.name: t for t in await store.list_triggers(origin="config") if t.kind != "schedule"}
    for name, (kind, workflow, spec, enabled) in others.items():
        current: TriggerRecord | None = existing.get(name) or await store.get_trigger(name)
        if current is None:
            with contextlib.suppress(Conflict):
                await store.create_trigger(
                    name=name, kind=kind, workflow=workflow, spec=spec, origin="config", enabled=enabled
                )
        elif current.origin != "config":
            log.warning("trigger %s exists (origin %s); trellis.toml's is ignored", name, current.origin)
        elif (current.kind, current.workflow, dict(current.spec)) != (kind, workflow, spec):
            await store.update_trigger(name, kind=kind, workflow=workflow, spec=spec)
    for name in existing.keys() - others.keys():
        await store.delete_trigger(name)
