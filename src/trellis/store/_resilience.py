"""Resilience: statements over ``agents``, ``breakers``, ``agent_samples`` and ``system_events``.

Functions here run on a connection whose transaction the caller (:class:`~trellis.store.Store`)
owns. The store knows nothing of what a breaker *means*: :func:`change_breaker` reads the row
under a lock, hands it to a pure function (see :mod:`trellis.resilience.breaker`) and writes
back what that function returns, with the events it names, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import RowMapping, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from trellis.store._dialect import Dialect, point
from trellis.store.records import iso
from trellis.store.schema import agent_samples, agents, breakers, system_events

T = TypeVar("T")


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One registered agent as stored."""

    name: str
    spec: Mapping[str, Any]
    """The agent's definition (see :class:`trellis.agents.AgentSpec`), secret *references* only."""
    enabled: bool
    healthy: bool
    """As the health monitor last judged it (a new agent starts healthy)."""
    health_changed_at: datetime | None
    last_probe_at: datetime | None
    revision: int
    """1 at registration, +1 per update."""
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """``{name, ...spec, enabled, healthy, health_changed_at, revision, created_at, updated_at}``."""
        return {
            "name": self.name,
            **self.spec,
            "enabled": self.enabled,
            "healthy": self.healthy,
            "health_changed_at": iso(self.health_changed_at),
            "last_probe_at": iso(self.last_probe_at),
            "revision": self.revision,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One circuit breaker's shared state."""

    key: str
    state: str
    """``closed``, ``open`` or ``half_open``."""
    policy: Mapping[str, Any]
    failures: tuple[float, ...] = ()
    """Epoch seconds of recent failures counted towards opening (closed state)."""
    opened_at: datetime | None = None
    trials_admitted: int = 0
    trial_successes: int = 0
    trial_started_at: datetime | None = None
    generation: int = 0
    """Incremented by every transition."""
    last_error: Mapping[str, Any] | None = None
    changed_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "state": self.state,
            "policy": dict(self.policy),
            "recent_failures": len(self.failures),
            "opened_at": iso(self.opened_at),
            "trials_admitted": self.trials_admitted,
            "trial_successes": self.trial_successes,
            "generation": self.generation,
            "last_error": None if self.last_error is None else dict(self.last_error),
            "changed_at": iso(self.changed_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """An event to record, or recorded, outside any run (``breaker.*``, ``agent.*``)."""

    type: str
    subject: str
    """The breaker key or agent name it is about."""
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    ts: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "type": self.type,
            "subject": self.subject,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class AgentSample:
    """The outcome of one probe or call of an agent."""

    agent: str
    ts: datetime
    source: str
    """``probe`` or ``call``."""
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


BreakerChange = Callable[[BreakerRecord], tuple[BreakerRecord | None, T, Sequence[SystemEvent]]]
"""``record -> (new record or None when unchanged, result, events to record)``."""


# -- agents -------------------------------------------------------------------------------------


def _agent(row: RowMapping) -> AgentRecord:
    return AgentRecord(
        name=row["name"],
        spec=row["spec"],
        enabled=row["enabled"],
        healthy=row["healthy"],
        health_changed_at=row["health_changed_at"],
        last_probe_at=row["last_probe_at"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@point
def get_agent(conn: Connection, name: str) -> AgentRecord | None:
    row = conn.execute(select(agents).where(agents.c.name == name)).mappings().one_or_none()
    return None if row is None else _agent(row)


def list_agents(conn: Connection) -> list[AgentRecord]:
    return [_agent(row) for row in conn.execute(select(agents).order_by(agents.c.name)).mappings()]


def insert_agent(
    conn: Connection, name: str, spec: Mapping[str, Any], enabled: bool, now: datetime
) -> AgentRecord | None:
    """Insert a new agent; ``None`` when the name is taken."""
    if get_agent(conn, name) is not None:
        return None
    values = {
        "name": name,
        "spec": dict(spec),
        "enabled": enabled,
        "healthy": True,
        "revision": 1,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(agents.insert().values(values))
    insert_events(conn, [SystemEvent("agent.registered", name, {"revision": 1})], now)
    return get_agent(conn, name)


def update_agent(
    conn: Connection,
    name: str,
    now: datetime,
    *,
    spec: Mapping[str, Any] | None = None,
    enabled: bool | None = None,
    revision: int | None = None,
) -> tuple[AgentRecord | None, bool]:
    """Change an agent's spec and/or enabled flag: ``(record or None if unknown, changed)``.

    With ``revision``, nothing changes unless the agent is still at that revision.
    """
    current = get_agent(conn, name)
    if current is None or (revision is not None and current.revision != revision):
        return current, False
    values: dict[str, Any] = {}
    if spec is not None and dict(spec) != dict(current.spec):
        values["spec"] = dict(spec)
    if enabled is not None and enabled != current.enabled:
        values["enabled"] = enabled
    if not values:
        return current, False
    next_revision = current.revision + 1
    result = conn.execute(
        update(agents)
        .where(agents.c.name == name, agents.c.revision == current.revision)
        .values(revision=next_revision, updated_at=now, **values)
    )
    if result.rowcount != 1:  # another transaction updated it first (PostgreSQL read committed)
        return get_agent(conn, name), False
    kind = "agent.updated" if "spec" in values else ("agent.enabled" if enabled else "agent.disabled")
    insert_events(conn, [SystemEvent(kind, name, {"revision": next_revision})], now)
    return get_agent(conn, name), True


@point
def claim_probe(conn: Connection, name: str, now: datetime, interval_seconds: float) -> bool:
    """Take the next probe of ``name`` if it is due; True for exactly one caller per interval."""
    due = now - timedelta(seconds=interval_seconds)
    result = conn.execute(
        update(agents)
        .where(
            agents.c.name == name,
            agents.c.enabled.is_(True),
            or_(agents.c.last_probe_at.is_(None), agents.c.last_probe_at <= due),
        )
        .values(last_probe_at=now)
    )
    return result.rowcount == 1


@point
def set_agent_health(
    conn: Connection, name: str, healthy: bool, now: datetime, data: Mapping[str, Any]
) -> bool:
    """Flip the agent's health if it is not already ``healthy``; records ``agent.healthy|unhealthy``."""
    result = conn.execute(
        update(agents)
        .where(agents.c.name == name, agents.c.healthy.is_(not healthy))
        .values(healthy=healthy, health_changed_at=now)
    )
    if result.rowcount != 1:
        return False
    kind = "agent.healthy" if healthy else "agent.unhealthy"
    insert_events(conn, [SystemEvent(kind, name, data)], now)
    return True


@point
def insert_samples(conn: Connection, samples: Sequence[AgentSample]) -> None:
    if samples:
        conn.execute(
            agent_samples.insert(),
            [
                {
                    "agent": s.agent,
                    "ts": s.ts,
                    "source": s.source,
                    "ok": s.ok,
                    "latency_ms": s.latency_ms,
                    "error": None if s.error is None else s.error[:200],
                }
                for s in samples
            ],
        )


def list_samples(conn: Connection, name: str, since: datetime, limit: int) -> list[AgentSample]:
    """The newest ``limit`` samples of ``name`` taken after ``since``, oldest first."""
    stmt = (
        select(agent_samples)
        .where(agent_samples.c.agent == name, agent_samples.c.ts > since)
        .order_by(agent_samples.c.ts.desc(), agent_samples.c.id.desc())
        .limit(limit)
    )
    rows = list(conn.execute(stmt).mappings())
    return [
        AgentSample(
            agent=row["agent"],
            ts=row["ts"],
            source=row["source"],
            ok=row["ok"],
            latency_ms=row["latency_ms"],
            error=row["error"],
        )
        for row in reversed(rows)
    ]


def prune_samples(conn: Connection, before: datetime) -> int:
    return conn.execute(delete(agent_samples).where(agent_samples.c.ts < before)).rowcount


# -- breakers -----------------------------------------------------------------------------------


def _breaker(row: RowMapping) -> BreakerRecord:
    return BreakerRecord(
        key=row["key"],
        state=row["state"],
        policy=row["policy"],
        failures=tuple(row["failures"] or ()),
        opened_at=row["opened_at"],
        trials_admitted=row["trials_admitted"],
        trial_successes=row["trial_successes"],
        trial_started_at=row["trial_started_at"],
        generation=row["generation"],
        last_error=row["last_error"],
        changed_at=row["changed_at"],
        updated_at=row["updated_at"],
    )


@point
def get_breaker(conn: Connection, key: str) -> BreakerRecord | None:
    row = conn.execute(select(breakers).where(breakers.c.key == key)).mappings().one_or_none()
    return None if row is None else _breaker(row)


def list_breakers(conn: Connection) -> list[BreakerRecord]:
    return [_breaker(row) for row in conn.execute(select(breakers).order_by(breakers.c.key)).mappings()]


@point
def change_breaker(
    conn: Connection,
    dialect: Dialect,
    key: str,
    policy: Mapping[str, Any],
    change: BreakerChange[T],
    now: datetime,
) -> T:
    """Apply ``change`` to the breaker ``key`` atomically (a closed breaker is created if missing).

    The row is locked for the transaction (``FOR UPDATE`` on PostgreSQL; SQLite's write
    transaction already excludes other writers), so two processes never both act on the same
    state: of two racing for the one half-open trial, the second sees it taken.
    """
    conn.execute(
        dialect.upsert(breakers, index_elements=["key"], update=[]).values(
            key=key,
            state="closed",
            policy=dict(policy),
            failures=[],
            changed_at=now,
            updated_at=now,
        )
    )
    row = conn.execute(select(breakers).where(breakers.c.key == key).with_for_update()).mappings().one()
    current = replace(_breaker(row), policy=dict(policy))
    changed, result, events = change(current)
    if changed is not None:
        conn.execute(
            update(breakers)
            .where(breakers.c.key == key)
            .values(
                state=changed.state,
                policy=dict(changed.policy),
                failures=list(changed.failures),
                opened_at=changed.opened_at,
                trials_admitted=changed.trials_admitted,
                trial_successes=changed.trial_successes,
                trial_started_at=changed.trial_started_at,
                generation=changed.generation,
                last_error=None if changed.last_error is None else dict(changed.last_error),
                changed_at=changed.changed_at or now,
                updated_at=now,
            )
        )
    insert_events(conn, events, now)
    return result


def delete_breaker(conn: Connection, key: str) -> bool:
    return conn.execute(delete(breakers).where(breakers.c.key == key)).rowcount == 1


# -- system events ------------------------------------------------------------------------------


@point
def insert_events(conn: Connection, events: Sequence[SystemEvent], now: datetime) -> None:
    if events:
        conn.execute(
            system_events.insert(),
            [{"ts": e.ts or now, "type": e.type, "subject": e.subject, "data": dict(e.data)} for e in events],
        )


def list_events(
    conn: Connection, *, after: int, limit: int, type_prefix: str | None, subject: str | None
) -> list[SystemEvent]:
    """System events with ``id > after``, oldest first."""
    stmt = select(system_events).where(system_events.c.id > after)
    if type_prefix:
        stmt = stmt.where(system_events.c.type.startswith(type_prefix, autoescape=True))
    if subject is not None:
        stmt = stmt.where(system_events.c.subject == subject)
    stmt = stmt.order_by(system_events.c.id).limit(limit)
    return [
        SystemEvent(type=r["type"], subject=r["subject"], data=r["data"] or {}, id=r["id"], ts=r["ts"])
        for r in conn.execute(stmt).mappings()
    ]


def last_event_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(system_events.c.id), 0))).scalar_one())
