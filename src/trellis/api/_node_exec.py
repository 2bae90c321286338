"""``POST /v1/workflows/{name}/nodes/{node}/execute``: run one node alone, for debugging.

See :func:`trellis.triggers.execute_node`: the node runs once on the state given, with real
side effects, and nothing is recorded; the answer is ``{status, update, next, error,
duration_ms, events, ...}`` — a node that fails answers 200 with ``status: failed``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import problems
from trellis.api._problems import Json
from trellis.auth import Permission
from trellis.triggers import execute_node

router = APIRouter(tags=["workflows"])
Ctx = Annotated[ApiContext, Depends(context)]


class NodeExecution(BaseModel):
    """``POST /v1/workflows/{name}/nodes/{node}/execute``."""

    model_config = ConfigDict(extra="forbid")

    state: dict[str, Any] = Field(default_factory=dict)
    """The state the node sees."""
    input: dict[str, Any] | None = None
    """Bound as ``input`` in the node's expressions (default: ``state``)."""
    version: int | None = Field(None, ge=1)
    """Workflow version (default: the latest)."""
    retries: bool = False
    """Apply the node's retry policy (default: one attempt)."""


@router.post(
    "/v1/workflows/{name}/nodes/{node}/execute",
    summary="Execute one node on a given state",
    responses=problems(404, 422),
    dependencies=[require(Permission.SUBMIT)],
)
async def execute(name: str, node: str, body: NodeExecution, ctx: Ctx) -> Json:
    """``{workflow, version, node, type, status, update, next, error, duration_ms, events}``."""
    ref = name if body.version is None else f"{name}@{body.version}"
    return Json(
        await execute_node(ctx.engine, ref, node, body.state, run_input=body.input, retries=body.retries)
    )
