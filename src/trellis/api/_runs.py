"""``/v1/runs``: create (idempotent, optionally waiting), list, and read a run and its records.

**Creating.** ``POST /v1/runs`` answers 201 with the run document as soon as the run is queued.
With an ``Idempotency-Key`` header, a repeat of the same body answers 200 with the run the key
created, and a different body under the same key is a 409 naming that run. With ``"wait":
true`` the answer waits until the run ended or parked (``waiting``, ``paused``) — at most
``wait_timeout`` seconds, capped by the server (``ApiSettings.wait_timeout_seconds``, 30 s by
default) — and then carries whatever status the run has, still ``running`` after a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query, Request

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import EventPage, RunCreate, RunDocument, RunPage, problems
from trellis.api._problems import Json
from trellis.auth import Permission
from trellis.errors import Conflict
from trellis.runtime import Engine
from trellis.store import RunRecord
from trellis.types import RunStatus

router = APIRouter(prefix="/v1/runs", tags=["runs"])

SETTLING_EVENTS: Final = frozenset(
    {"run.succeeded", "run.failed", "run.cancelled", "run.waiting", "run.paused"}
)
SETTLED: Final = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.WAITING, RunStatus.PAUSED}
)
Ctx = Annotated[ApiContext, Depends(context)]


def request_hash(body: RunCreate) -> str:
    """What an idempotent repeat must match: workflow, input and priority (not ``wait``)."""
    canonical = json.dumps(
        {"workflow": body.workflow, "input": body.input, "priority": body.priority},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _repeat(run: RunRecord, key: str, digest: str) -> RunRecord:
    if run.request_hash != digest:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request (run {run.id}); "
            "send the same body to get that run again, or a new key for a new run",
            details={"idempotency_key": key, "run_id": run.id},
        )
    return run


async def wait_until_settled(engine: Engine, run: RunRecord, seconds: float, poll: float) -> RunRecord:
    """The run once it ended or parked, or as it is when ``seconds`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with engine.bus.subscribe(run.id) as queue:
        while True:
            run = await engine.get_run(run.id)
            remaining = deadline - loop.time()
            if run.status in SETTLED or remaining <= 0:
                return run
            try:
                async with asyncio.timeout(min(remaining, poll)):
                    while (event := await queue.get()) is None or event.type not in SETTLING_EVENTS:
                        pass
            except TimeoutError:
                pass  # look at the store anyway: the live feed is best effort


@router.post(
    "",
    summary="Create a run (queued at once)",
    status_code=201,
    response_model=None,
    responses={201: {"model": RunDocument}, 200: {"model": RunDocument}, **problems(400, 404, 409, 422)},
    dependencies=[require(Permission.SUBMIT)],
)
async def create_run(
    body: RunCreate,
    request: Request,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> Json:
    """``{"workflow": "name" | "name@version", "input": {...}, "priority"?, "wait"?, "wait_timeout"?}``."""
    engine = ctx.engine
    digest = request_hash(body)
    status = 201
    existing = await engine.store.find_run_by_idempotency_key(idempotency_key) if idempotency_key else None
    if existing is not None:
        assert idempotency_key is not None
        run, status = _repeat(existing, idempotency_key, digest), 200
    else:
        try:
            run = await engine.submit(
                body.workflow,
                body.input,
                priority=body.priority,
                idempotency_key=idempotency_key,
                request_hash=digest if idempotency_key else None,
                callback=body.callback.model_dump() if body.callback else None,
            )
        except Conflict as exc:  # another request with the same key won the race
            if not idempotency_key or exc.details.get("idempotency_key") != idempotency_key:
                raise
            raced = await engine.store.find_run_by_idempotency_key(idempotency_key)
            if raced is None:
                raise
            run, status = _repeat(raced, idempotency_key, digest), 200
    request.state.run_id = run.id
    if body.wait:
        timeout = min(
            body.wait_timeout or ctx.settings.wait_timeout_seconds, ctx.settings.wait_timeout_seconds
        )
        run = await wait_until_settled(engine, run, timeout, ctx.settings.stream_poll_seconds)
    return Json(run.to_dict(), status_code=status, headers={"Location": f"/v1/runs/{run.id}"})


def _aware(value: datetime | None) -> datetime | None:
    """Timestamps without an offset are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get(
    "",
    summary="List runs, newest first",
    response_model=None,
    responses={200: {"model": RunPage}, **problems(422)},
    dependencies=[require(Permission.READ)],
)
async def list_runs(
    ctx: Ctx,
    status: Annotated[list[RunStatus] | None, Query(description="Repeatable: any of these statuses.")] = None,
    workflow: Annotated[str | None, Query(description="Only runs of this workflow (any version).")] = None,
    created_after: Annotated[datetime | None, Query(description="ISO 8601; UTC if no offset.")] = None,
    created_before: Annotated[datetime | None, Query(description="ISO 8601; UTC if no offset.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Json:
    """``{runs: [...], next_cursor}``; pages never repeat or skip a run, even while runs are created."""
    runs, next_cursor = await ctx.engine.store.list_runs(
        status=[s.value for s in status] if status else None,
        workflow=workflow,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
        limit=limit,
        cursor=cursor,
    )
    return Json({"runs": [r.to_dict() for r in runs], "next_cursor": next_cursor})


@router.get(
    "/{run_id}",
    summary="A run",
    response_model=None,
    responses={200: {"model": RunDocument}, **problems(404)},
    dependencies=[require(Permission.READ)],
)
async def get_run(run_id: str, ctx: Ctx) -> Json:
    return Json((await ctx.engine.get_run(run_id)).to_dict())


@router.get(
    "/{run_id}/nodes",
    summary="The state of each node of a run",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def list_nodes(run_id: str, ctx: Ctx) -> Json:
    """``{run_id, nodes: [{node, status, attempt, started_at, finished_at, duration_ms, error, ...}]}``."""
    await ctx.engine.get_run(run_id)
    nodes = await ctx.engine.store.list_node_states(run_id)
    return Json({"run_id": run_id, "nodes": [n.to_dict() for n in nodes]})


@router.get(
    "/{run_id}/events",
    summary="A page of a run's event log",
    response_model=None,
    responses={200: {"model": EventPage}, **problems(404, 422)},
    dependencies=[require(Permission.READ)],
)
async def list_events(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, description="Only events with a greater seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Json:
    """``{run_id, events, next_after}``; ``next_after`` is the ``after`` of the next page, or null."""
    await ctx.engine.get_run(run_id)
    events = await ctx.engine.store.list_events(run_id, after=after, limit=limit)
    next_after = events[-1].seq if len(events) == limit else None
    return Json({"run_id": run_id, "events": [e.to_dict() for e in events], "next_after": next_after})


@router.get(
    "/{run_id}/state",
    summary="The run's current state version",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def get_state(run_id: str, ctx: Ctx) -> Json:
    """``{checkpoint_id, parent_checkpoint_id, step, source, created_at, next, values}``."""
    return Json(await ctx.engine.state(run_id))


@router.get(
    "/{run_id}/history",
    summary="Every state version of the run, newest first",
    responses=problems(404, 422),
    dependencies=[require(Permission.READ)],
)
async def get_history(
    run_id: str, ctx: Ctx, limit: Annotated[int | None, Query(ge=1, le=10_000)] = None
) -> Json:
    """``{run_id, versions: [...]}``; a version's ``checkpoint_id`` is what rollback and diff take."""
    versions: list[dict[str, Any]] = await ctx.engine.history(run_id, limit=limit)
    return Json({"run_id": run_id, "versions": versions})


@router.get(
    "/{run_id}/history/{checkpoint_id}/diff",
    summary="What changed in a state version",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def get_diff(
    run_id: str,
    checkpoint_id: str,
    ctx: Ctx,
    against: Annotated[
        str | None, Query(description="Compare with this version (default: its parent).")
    ] = None,
) -> Json:
    """``{run_id, checkpoint_id, against, changes}``; an unknown version is a 404."""
    return Json(await ctx.engine.diff(run_id, checkpoint_id, against=against))
