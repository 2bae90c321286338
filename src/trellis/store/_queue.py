"""The run queue: claims under leases with fencing tokens, heartbeats, workers, depth.

A run is *claimable* when it is ``queued``, when it is ``running`` but its lease expired (its
worker died: another takes over from the last checkpoint), or when it is ``waiting`` and its
timer is due. A claim is a compare-and-set on the run's ``lease_token``: it succeeds only if
nobody claimed the run since it was read, and it increments the token, so every later write
of the previous holder (fenced by its old token) is refused.

On PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED``, so concurrent workers never
wait on each other's rows; per-workflow concurrency limits are enforced under a
per-workflow advisory lock. On SQLite every write is serialised by ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Integer, RowMapping, bindparam, delete, func, select, text, union_all, update
from sqlalchemy.engine import Connection

from trellis.store._dialect import pg_notify, point
from trellis.store._prepared import Prepared
from trellis.store._runs import run_from_row
from trellis.store.records import RunRecord, iso
from trellis.store.schema import runs, workers, workflows
from trellis.types import RunStatus

CANDIDATE_FACTOR = 4
"""Candidates read per free slot, so runs held back by concurrency limits do not starve others."""
ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.WAITING.value, RunStatus.PAUSED.value)


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: str
    status: str
    lease_token: int
    workflow: str
    version: int
    priority: int
    created_at: datetime
    hash: str


LEASE_EXPIRED: Final = {"kind": "lease_expired"}
"""``parked`` of a running run claimed because its lease expired (cleared when it starts)."""


@point
def claim(
    conn: Connection,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
    postgres: bool,
) -> list[RunRecord]:
    """Claim up to ``limit`` runs for ``owner``: priority first, then oldest first."""
    if limit <= 0:
        return []
    candidates = _candidates(conn, limit * CANDIDATE_FACTOR, now, postgres)
    candidates.sort(key=lambda c: (-c.priority, c.created_at, c.id))
    limits = _concurrency_limits(conn, {(c.workflow, c.version, c.hash) for c in candidates})
    if limits:
        if postgres:
            for name in sorted({wf for (wf, _), n in limits.items() if n is not None}):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(name)})
        running = _running_counts(conn, {wf for (wf, _) in limits}, now)
    else:
        running = {}
    claimed: list[RunRecord] = []
    expires = now + timedelta(seconds=lease_seconds)
    for candidate in candidates:
        if len(claimed) >= limit:
            break
        cap = limits.get((candidate.workflow, candidate.version))
        if cap is not None and running.get(candidate.workflow, 0) >= cap:
            continue
        # A running candidate's worker let its lease expire: say so to the run's next execution
        # (it reports ``run.resumed`` from ``lease_expired``, which metrics count).
        taken_over = {"parked": LEASE_EXPIRED} if candidate.status == RunStatus.RUNNING.value else None
        record = _take(
            conn, candidate.id, candidate.status, candidate.lease_token, owner, expires, now, taken_over
        )
        if record is not None:
            claimed.append(record)
            running[candidate.workflow] = running.get(candidate.workflow, 0) + 1
    return claimed


@point
def claim_one(
    conn: Connection,
    run_id: str,
    *,
    owner: str,
    expected_token: int,
    expected_status: str,
    lease_seconds: float,
    now: datetime,
    fields: Mapping[str, Any] | None = None,
) -> RunRecord | None:
    """Claim one run the caller decided is claimable; ``None`` if it changed meanwhile."""
    expires = now + timedelta(seconds=lease_seconds)
    return _take(conn, run_id, expected_status, expected_token, owner, expires, now, fields)


_CANDIDATE_COLUMNS = (
    runs.c.id,
    runs.c.status,
    runs.c.lease_token,
    runs.c.workflow,
    runs.c.version,
    runs.c.priority,
    runs.c.created_at,
    runs.c.hash,
)
_LIMIT = bindparam("n", type_=Integer)
_CANDIDATE_QUERIES = (
    select(*_CANDIDATE_COLUMNS)
    .where(runs.c.status == RunStatus.QUEUED.value)
    .order_by(runs.c.priority.desc(), runs.c.created_at)
    .limit(_LIMIT),
    select(*_CANDIDATE_COLUMNS)
    .where(runs.c.status == RunStatus.RUNNING.value, runs.c.lease_expires_at < bindparam("now"))
    .order_by(runs.c.lease_expires_at)
    .limit(_LIMIT),
    select(*_CANDIDATE_COLUMNS)
    .where(runs.c.status == RunStatus.WAITING.value, runs.c.wake_at <= bindparam("now"))
    .order_by(runs.c.wake_at)
    .limit(_LIMIT),
)
_LOCKED = [
    query.with_for_update(skip_locked=True).cte(f"c{kind}") for kind, query in enumerate(_CANDIDATE_QUERIES)
]
_CANDIDATES: Final = {
    False: tuple(Prepared(query) for query in _CANDIDATE_QUERIES),
    True: (Prepared(select(union_all(*(select(cte) for cte in _LOCKED)).subquery())),),
}
"""The three kinds of claimable runs (queued, lease expired, timer due): three queries on SQLite;
on PostgreSQL one statement of three CTEs, each ``FOR UPDATE SKIP LOCKED`` (one round trip
instead of three, in the claiming transaction)."""


def _candidates(conn: Connection, n: int, now: datetime, postgres: bool) -> list[_Candidate]:
    params = {"n": n, "now": now}
    return [_Candidate(**row) for query in _CANDIDATES[postgres] for row in query.rows(conn, params)]


_TAKES: dict[frozenset[str], Prepared] = {}
"""The claiming ``UPDATE``, one per set of extra fields it sets."""


def _take_statement(extra: frozenset[str]) -> Prepared:
    prepared = _TAKES.get(extra)
    if prepared is None:
        stmt = (
            update(runs)
            .where(
                runs.c.id == bindparam("p_id"),
                runs.c.status == bindparam("p_status"),
                runs.c.lease_token == bindparam("p_token"),
            )
            .values(
                status=RunStatus.RUNNING.value,
                lease_owner=bindparam("p_owner"),
                lease_token=runs.c.lease_token + 1,
                lease_expires_at=bindparam("p_expires"),
                updated_at=bindparam("p_now"),
                **{name: bindparam(f"v_{name}") for name in sorted(extra)},
            )
            .returning(*runs.c)
        )
        prepared = _TAKES[extra] = Prepared(stmt)
    return prepared


def _take(
    conn: Connection,
    run_id: str,
    status: str,
    token: int,
    owner: str,
    expires: datetime,
    now: datetime,
    fields: Mapping[str, Any] | None = None,
) -> RunRecord | None:
    extra = dict(fields or {})
    params: dict[str, Any] = {f"v_{name}": value for name, value in extra.items()}
    params.update(p_id=run_id, p_status=status, p_token=token, p_owner=owner, p_expires=expires, p_now=now)
    row = _take_statement(frozenset(extra)).first(conn, params)
    return None if row is None else run_from_row(row)


_CONCURRENCY: dict[str, int | None] = {}
"""A definition's ``concurrency`` by its content hash: a version's content never changes, and
the hash names the content in any database, so this needs no invalidation."""


def _concurrency_limits(
    conn: Connection, versions: Iterable[tuple[str, int, str]]
) -> dict[tuple[str, int], int]:
    """``(workflow, version) -> concurrency`` for the versions (name, version, content hash)
    that declare a limit."""
    versions = set(versions)
    unknown = sorted({name for name, _, hash in versions if hash not in _CONCURRENCY})
    if unknown:
        rows = conn.execute(
            select(workflows.c.hash, workflows.c.definition).where(workflows.c.name.in_(unknown))
        ).mappings()
        for row in rows:
            definition = row["definition"] or {}
            cap = definition.get("concurrency") if isinstance(definition, dict) else None
            _CONCURRENCY[row["hash"]] = cap if isinstance(cap, int) else None
    limits: dict[tuple[str, int], int] = {}
    for name, version, hash in versions:
        cap = _CONCURRENCY.get(hash)
        if cap is not None:
            limits[(name, version)] = cap
    return limits


def _running_counts(conn: Connection, names: Iterable[str], now: datetime) -> dict[str, int]:
    rows = conn.execute(
        select(runs.c.workflow, func.count())
        .where(
            runs.c.workflow.in_(sorted(set(names))),
            runs.c.status == RunStatus.RUNNING.value,
            runs.c.lease_expires_at >= now,
        )
        .group_by(runs.c.workflow)
    )
    return {str(name): int(count) for name, count in rows.all()}


def _lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key per workflow name."""
    return zlib.crc32(f"trellis:workflow:{name}".encode()) | (1 << 40)


def transition(
    conn: Connection, run_id: str, expected_status: str, fields: Mapping[str, Any], *, now: datetime
) -> RunRecord | None:
    """Change a run's fields only if it is still in ``expected_status``; ``None`` if it is not."""
    stmt = (
        update(runs)
        .where(runs.c.id == run_id, runs.c.status == expected_status)
        .values(updated_at=now, **dict(fields))
        .returning(*runs.c)
    )
    row = conn.execute(stmt).mappings().one_or_none()
    return None if row is None else run_from_row(row)


@point
def heartbeat(conn: Connection, run_id: str, token: int, *, lease_seconds: float, now: datetime) -> bool:
    """Extend a lease still held under ``token``; False when it was taken over."""
    result = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.lease_token == token, runs.c.status == RunStatus.RUNNING.value)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1


@point
def lease_holds(conn: Connection, run_id: str, token: int) -> bool:
    """Whether ``run_id`` is still leased under ``token`` (nobody claimed it since)."""
    found = conn.execute(select(runs.c.lease_token).where(runs.c.id == run_id)).scalar_one_or_none()
    return found == token


@point
def release(conn: Connection, run_id: str, token: int, *, now: datetime) -> bool:
    """Give a run back (status ``queued``, lease expired) so another worker can take it at once."""
    result = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.lease_token == token, runs.c.status == RunStatus.RUNNING.value)
        .values(status=RunStatus.QUEUED.value, lease_owner=None, lease_expires_at=None, updated_at=now)
    )
    return result.rowcount == 1


# -- workers ----------------------------------------------------------------------------------------


@point
def upsert_worker(
    conn: Connection,
    *,
    worker_id: str,
    host: str,
    pid: int,
    concurrency: int,
    running: int,
    draining: bool,
    now: datetime,
    started: bool,
) -> None:
    values = {"concurrency": concurrency, "running": running, "draining": draining, "heartbeat_at": now}
    if started:
        conn.execute(delete(workers).where(workers.c.id == worker_id))
        conn.execute(workers.insert().values(id=worker_id, host=host, pid=pid, started_at=now, **values))
    else:
        conn.execute(update(workers).where(workers.c.id == worker_id).values(values))


def remove_worker(conn: Connection, worker_id: str) -> None:
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def stats(conn: Connection, *, now: datetime, alive_seconds: float) -> dict[str, Any]:
    """Queue depth by status and workflow, the oldest queued run's age, live workers and leases."""
    depth: dict[str, dict[str, int]] = {s: {} for s in ACTIVE}
    rows = conn.execute(
        select(runs.c.status, runs.c.workflow, func.count())
        .where(runs.c.status.in_(ACTIVE))
        .group_by(runs.c.status, runs.c.workflow)
    )
    for status, workflow, count in rows:
        depth[status][workflow] = count
    oldest = conn.execute(
        select(func.min(runs.c.created_at)).where(runs.c.status == RunStatus.QUEUED.value)
    ).scalar_one_or_none()
    if isinstance(oldest, str):  # SQLite aggregates lose the column type
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    horizon = now - timedelta(seconds=alive_seconds)
    worker_rows = conn.execute(select(workers).order_by(workers.c.started_at)).mappings()
    lease_rows = conn.execute(
        select(runs.c.id, runs.c.workflow, runs.c.lease_owner, runs.c.lease_token, runs.c.lease_expires_at)
        .where(runs.c.status == RunStatus.RUNNING.value)
        .order_by(runs.c.lease_expires_at)
    ).mappings()
    return {
        "depth": {
            status: {"total": sum(by_wf.values()), "by_workflow": by_wf} for status, by_wf in depth.items()
        },
        "oldest_queued_age_seconds": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        "workers": [_worker_doc(row, horizon) for row in worker_rows],
        "leases": [
            {
                "run_id": row["id"],
                "workflow": row["workflow"],
                "owner": row["lease_owner"],
                "token": row["lease_token"],
                "expires_at": iso(row["lease_expires_at"]),
                "expired": row["lease_expires_at"] is None or row["lease_expires_at"] < now,
            }
            for row in lease_rows
        ],
    }


def _worker_doc(row: RowMapping, horizon: datetime) -> dict[str, Any]:
    return {
        "id": row["id"],
        "host": row["host"],
        "pid": row["pid"],
        "concurrency": row["concurrency"],
        "running": row["running"],
        "draining": row["draining"],
        "started_at": iso(row["started_at"]),
        "heartbeat_at": iso(row["heartbeat_at"]),
        "alive": row["heartbeat_at"] >= horizon,
    }


def notify(conn: Connection, channel: str, payloads: Sequence[str]) -> None:
    """``pg_notify`` each payload on ``channel`` (delivered when the transaction commits)."""
    for payload in payloads:
        pg_notify(conn, channel, payload)
