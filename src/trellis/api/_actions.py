"""``POST /v1/runs/{id}/cancel|pause|resume|approve|reject|retry|rollback``: steer a run.

Each action is written to the store first and acted on by whichever process holds the run, so
it works wherever the run executes. Every action answers the run document and the caller is
recorded (``actor`` = the API key's name; approvals keep it as ``result.by``):

* **200** when the action is done: a parked or queued run cancelled or paused at once; a run
  queued again by ``resume``, ``approve``, ``reject``, ``retry``, ``rollback`` (a worker
  continues it, so the document may already say ``running``).
* **202** for ``cancel`` and ``pause`` of a ``running`` run: the command was handed to the
  worker holding it and takes effect at its next step boundary (cancel: at once); the
  document still says ``running``; follow the stream to see it happen.
* **409** when the action does not apply, with the reason: approving a run that is not
  waiting says what it waits for, if anything; retrying needs a failed run; etc.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import Decision, Rollback, RunDocument, problems
from trellis.api._problems import Json
from trellis.auth import Permission, Principal
from trellis.store import RunRecord
from trellis.types import RunStatus

router = APIRouter(prefix="/v1/runs/{run_id}", tags=["run actions"])

Ctx = Annotated[ApiContext, Depends(context)]
Operator = Annotated[Principal, require(Permission.CONTROL)]
Approver = Annotated[Principal, require(Permission.DECIDE)]
RESPONSES = {200: {"model": RunDocument}, 202: {"model": RunDocument}, **problems(404, 409, 422)}


def _answer(run: RunRecord, *, handed_off: bool = False) -> Json:
    return Json(run.to_dict(), status_code=202 if handed_off else 200)


@router.post("/cancel", summary="Cancel a run", response_model=None, responses=RESPONSES)
async def cancel(run_id: str, ctx: Ctx, who: Operator) -> Json:
    """Running nodes end ``cancelled``; a parked or queued run is cancelled at once."""
    run = await ctx.engine.cancel(run_id, actor=who.name)
    return _answer(run, handed_off=run.status == RunStatus.RUNNING)


@router.post("/pause", summary="Pause a run", response_model=None, responses=RESPONSES)
async def pause(run_id: str, ctx: Ctx, who: Operator) -> Json:
    """A running run pauses at its next step boundary; a queued one before it starts."""
    run = await ctx.engine.pause(run_id, actor=who.name)
    return _answer(run, handed_off=run.status == RunStatus.RUNNING)


@router.post("/resume", summary="Resume a paused run", response_model=None, responses=RESPONSES)
async def resume(run_id: str, ctx: Ctx, who: Operator) -> Json:
    """The run is queued again and continues from its last checkpoint."""
    return _answer(await ctx.engine.resume(run_id, actor=who.name))


@router.post("/retry", summary="Retry a failed run", response_model=None, responses=RESPONSES)
async def retry(run_id: str, ctx: Ctx, who: Operator) -> Json:
    """Continues from the node that failed; completed nodes are not run again."""
    return _answer(await ctx.engine.retry(run_id, actor=who.name))


@router.post(
    "/rollback", summary="Roll a run back to a state version", response_model=None, responses=RESPONSES
)
async def rollback(run_id: str, body: Rollback, ctx: Ctx, who: Operator) -> Json:
    """Forks the state from ``checkpoint_id`` (see ``/history``) and continues from there; history is kept."""
    return _answer(await ctx.engine.rollback(run_id, body.checkpoint_id, actor=who.name))


async def _decide(
    ctx: ApiContext, run_id: str, who: Principal, body: Decision | None, approved: bool
) -> Json:
    decision = body or Decision()
    run = await ctx.engine.decide(
        run_id,
        approved=approved,
        actor=who.name,
        comment=decision.comment,
        data=decision.data,
        node=decision.node,
    )
    return _answer(run)


@router.post("/approve", summary="Approve the gate a run waits at", response_model=None, responses=RESPONSES)
async def approve(
    run_id: str, ctx: Ctx, who: Approver, body: Annotated[Decision | None, Body()] = None
) -> Json:
    """``{"comment"?, "data"?, "node"?}``; ``data`` is checked against the gate's form (422)."""
    return await _decide(ctx, run_id, who, body, approved=True)


@router.post("/reject", summary="Reject the gate a run waits at", response_model=None, responses=RESPONSES)
async def reject(
    run_id: str, ctx: Ctx, who: Approver, body: Annotated[Decision | None, Body()] = None
) -> Json:
    """``{"comment"?, "data"?, "node"?}``; the gate's ``on_reject`` decides what follows."""
    return await _decide(ctx, run_id, who, body, approved=False)
