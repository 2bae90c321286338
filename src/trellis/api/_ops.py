"""Operations: ``/healthz`` (alive), ``/readyz`` (able to serve), ``/v1/queue``, ``/v1/audit``.

``/readyz`` answers 200 when the database answers, its schema is at this release's head
revision, and at least one worker (in this process or another) has a live heartbeat; otherwise
a 503 problem document whose ``checks`` say which check failed. Neither probe needs a key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import problems
from trellis.api._problems import Json, problem
from trellis.auth import Permission

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/healthz", tags=["operations"], summary="The process is alive")
async def healthz() -> Json:
    return Json({"status": "ok"})


async def _checks(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    store = ctx.engine.store
    checks: dict[str, dict[str, Any]] = {}
    try:
        current = await store.current_revision()
    except Exception as exc:  # an unreachable database is exactly what this probe reports
        checks["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return checks
    checks["database"] = {"ok": True, "dialect": store.dialect}
    head = store.head_revision()
    checks["migrations"] = {"ok": current == head, "current": current, "head": head}
    queue_stats = getattr(ctx.engine, "queue_stats", None)
    if queue_stats is None:
        checks["worker"] = {"ok": None, "status": "unknown"}
        return checks
    try:
        stats = await queue_stats()
    except Exception as exc:
        checks["worker"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return checks
    alive = [w for w in stats.get("workers", []) if w.get("alive")]
    checks["worker"] = {"ok": bool(alive), "alive": len(alive)}
    return checks


@router.get(
    "/readyz",
    tags=["operations"],
    summary="Ready to serve: database, migrations, a worker",
    responses=problems(503),
)
async def readyz(ctx: Ctx) -> Json:
    checks = await _checks(ctx)
    failed = [name for name, check in checks.items() if check.get("ok") is False]
    if failed:
        return problem(503, f"not ready: {', '.join(failed)} check failed", name="NotReady", checks=checks)
    return Json({"status": "ready", "checks": checks})


@router.get(
    "/v1/queue",
    tags=["operations"],
    summary="Queue depth, workers and leases",
    responses=problems(503),
    dependencies=[require(Permission.READ)],
)
async def queue(ctx: Ctx) -> Json:
    """``{depth, workers: [{id, host, pid, concurrency, running, draining, heartbeat_at, alive}], ...}``."""
    queue_stats = getattr(ctx.engine, "queue_stats", None)
    if queue_stats is None:
        return problem(503, "queue statistics are not available in this build", name="Unavailable")
    return Json(await queue_stats())


@router.get(
    "/v1/audit",
    tags=["operations"],
    summary="The audit log of mutating calls (admin)",
    dependencies=[require(Permission.AUDIT)],
)
async def audit(
    ctx: Ctx,
    run_id: Annotated[str | None, Query(description="Only calls about this run.")] = None,
    after: Annotated[int, Query(ge=0, description="Only records with a greater id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Json:
    """``{records: [{id, ts, actor, role, method, path, run_id, status}], next_after}``, oldest first."""
    records = await ctx.engine.store.list_audit(run_id=run_id, after=after, limit=limit)
    next_after = records[-1].id if len(records) == limit else None
    return Json({"records": [r.to_dict() for r in records], "next_after": next_after})
