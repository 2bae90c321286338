"""Run analytics and node logs: ``GET /v1/metrics/summary`` and ``GET /v1/runs/{id}/logs``.

The summary is computed from the store at request time (see :func:`trellis.observability.summarize`)
for the runs *created* in the window ``since`` .. now; ``since`` is an ISO 8601 time or a
duration back from now (``24h``, ``7d``), 24 hours by default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import problems
from trellis.api._problems import Json
from trellis.auth import Permission
from trellis.errors import ValidationError
from trellis.observability import parse_duration, summarize

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``2026-11-24T00:00:00Z`` (a naive time is UTC) or ``24h`` / ``7d`` back from now."""
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"since must be an ISO 8601 time or a duration such as 24h or 7d, not {text!r}",
            details={"location": "query.since"},
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@router.get(
    "/v1/metrics/summary",
    tags=["operations"],
    summary="Run analytics: success rates, durations, node failures and retries, LLM tokens",
    responses=problems(422),
    dependencies=[require(Permission.READ)],
)
async def metrics_summary(
    ctx: Ctx,
    workflow: Annotated[str | None, Query(description="Only this workflow.")] = None,
    since: Annotated[str, Query(description="ISO 8601 time, or a duration back from now (24h, 7d).")] = "24h",
) -> Json:
    """``{since, workflow, workflows: [{workflow, runs, success_rate, duration_seconds: {p50, p95},
    nodes: [{node, count, failure_rate, duration_ms: {mean, p95}, retries}]}], tokens: {...}}``."""
    start = parse_since(since)
    rows = await ctx.engine.store.analytics_rows(workflow=workflow, since=start)
    return Json(summarize(rows, since=start, workflow=workflow))


@router.get(
    "/v1/runs/{run_id}/logs",
    tags=["runs"],
    summary="Log lines the run's nodes emitted",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def run_logs(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, description="Only lines with a greater id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    node: Annotated[str | None, Query(description="Only lines of this node (key, e.g. fetch[2]).")] = None,
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"] | None,
        Query(description="Lowest level listed."),
    ] = None,
) -> Json:
    """``{logs: [{id, ts, level, node, attempt, logger, message, data}], next_after}``, oldest first."""
    await ctx.engine.get_run(run_id)  # 404 for an unknown run
    lines = await ctx.engine.store.list_logs(run_id, after=after, limit=limit, node=node, level=level)
    next_after = lines[-1].id if len(lines) == limit else None
    return Json({"logs": [line.to_dict() for line in lines], "next_after": next_after})
