"""``/v1/triggers``, ``/v1/schedules``, ``/v1/hooks/{trigger}`` and ``/v1/runs/{id}/deliveries``.

Triggers start runs from outside (see :mod:`trellis.triggers`): register them here (``POST
/v1/triggers``), pause and resume them, and deliver webhooks to them. ``/v1/hooks/...`` is not
authenticated with API keys — webhook senders hold no Trellis key — but with the HMAC signature
of each delivery under the trigger's secret (see :func:`trellis.triggers.receive_webhook`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import problems
from trellis.api._problems import Json
from trellis.auth import Permission
from trellis.triggers import create_trigger, delete_trigger, get_trigger, receive_webhook, set_enabled

router = APIRouter(tags=["triggers"])
Ctx = Annotated[ApiContext, Depends(context)]


class TriggerCreate(BaseModel):
    """``POST /v1/triggers``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["nightly-report", "github-push"])
    kind: str = Field(examples=["schedule", "webhook", "nats", "redis"])
    workflow: str = Field(min_length=1, max_length=220)
    """``name`` (latest version at each start) or ``name@version``."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """Per kind: ``schedule`` ``{cron, timezone?, input?, missed?}``; ``webhook`` ``{secret: "env:NAME",
    input?: CEL, signature_header?, delivery_header?}``; ``nats`` ``{url?, stream, subject, durable?,
    input?, ack_wait_seconds?}``; ``redis`` ``{url?, stream, group?, input?, claim_idle_seconds?}``."""
    enabled: bool = True


@router.post(
    "/v1/triggers",
    summary="Register a trigger",
    status_code=201,
    responses=problems(404, 409, 422),
    dependencies=[require(Permission.REGISTER)],
)
async def register_trigger(body: TriggerCreate, ctx: Ctx) -> Json:
    record = await create_trigger(
        ctx.engine, body.name, body.kind, body.workflow, body.spec, enabled=body.enabled
    )
    return Json(record.to_dict(), status_code=201, headers={"Location": f"/v1/triggers/{record.name}"})


@router.get("/v1/triggers", summary="List triggers", dependencies=[require(Permission.READ)])
async def list_triggers(
    ctx: Ctx, kind: Annotated[str | None, Query(description="Only triggers of this kind.")] = None
) -> Json:
    """``{triggers: [...]}`` by name."""
    records = await ctx.engine.store.list_triggers(kind=kind)
    return Json({"triggers": [r.to_dict() for r in records]})


@router.get(
    "/v1/triggers/{name}",
    summary="A trigger",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def show_trigger(name: str, ctx: Ctx) -> Json:
    return Json((await get_trigger(ctx.engine, name)).to_dict())


@router.delete(
    "/v1/triggers/{name}",
    summary="Delete a trigger registered over REST or the CLI",
    status_code=204,
    responses=problems(404, 409),
    dependencies=[require(Permission.REGISTER)],
)
async def remove_trigger(name: str, ctx: Ctx) -> Json:
    await delete_trigger(ctx.engine, name)
    return Json(None, status_code=204)


for _verb, _enabled in (("pause", False), ("resume", True)):

    def _route(enabled: bool = _enabled) -> Any:
        async def change(name: str, ctx: Ctx) -> Json:
            return Json((await set_enabled(ctx.engine, name, enabled)).to_dict())

        return change

    router.add_api_route(
        f"/v1/triggers/{{name}}/{_verb}",
        _route(),
        methods=["POST"],
        summary=f"{_verb.capitalize()} a trigger",
        responses=problems(404),
        dependencies=[require(Permission.CONTROL)],
    )
    router.add_api_route(
        f"/v1/schedules/{{name}}/{_verb}",
        _route(),
        methods=["POST"],
        summary=f"{_verb.capitalize()} a schedule",
        responses=problems(404),
        dependencies=[require(Permission.CONTROL)],
    )


@router.get("/v1/schedules", summary="List schedules", dependencies=[require(Permission.READ)])
async def list_schedules(ctx: Ctx) -> Json:
    """``{schedules: [...]}``: the ``schedule`` triggers, with ``next_fire_at`` and ``last_run_id``."""
    records = await ctx.engine.store.list_triggers(kind="schedule")
    return Json({"schedules": [r.to_dict() for r in records]})


@router.post(
    "/v1/hooks/{name}",
    summary="Deliver a webhook (HMAC-signed; no API key)",
    status_code=201,
    responses=problems(401, 404, 409, 422, 503),
)
async def hook(name: str, request: Request, ctx: Ctx) -> Json:
    """Starts a run: 201 with the run document; a delivery id seen before answers 200 with its run."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    run, created = await receive_webhook(ctx.engine, name, body, headers)
    request.state.run_id = run.id
    return Json(
        run.to_dict(), status_code=201 if created else 200, headers={"Location": f"/v1/runs/{run.id}"}
    )


@router.get(
    "/v1/runs/{run_id}/deliveries",
    summary="Attempts to deliver a run to its callback URL",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def list_deliveries(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, description="Only attempts with a greater id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Json:
    """``{run_id, callback, deliveries: [{id, seq, kind, url, attempt, ok, status_code, error, ...}]}``."""
    await ctx.engine.get_run(run_id)
    callback = await ctx.engine.store.get_callback(run_id)
    attempts = await ctx.engine.store.list_deliveries(run_id, after=after, limit=limit)
    return Json(
        {
            "run_id": run_id,
            "callback": None
            if callback is None
            else {
                "url": callback.url,
                "events": callback.events,
                "delivered_seq": callback.delivered_seq,
                "next_attempt_at": callback.next_attempt_at,
            },
            "deliveries": [a.to_dict() for a in attempts],
        }
    )
