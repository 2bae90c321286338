"""Request bodies (validated) and response shapes (for the OpenAPI document only).

Responses are rendered from the store's records (``to_dict()``), the same documents the CLI's
``--json`` prints; the models below describe them for clients and are never used to filter a
response, so a field added to a record reaches clients without touching this module.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Callback(BaseModel):
    """Where Trellis delivers a run (see :mod:`trellis.triggers._callbacks`)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=2000, pattern=r"^https?://", examples=["https://ci.example/hook"]
    )
    events: bool = False
    """Deliver every event of the run too, not only its final document."""
    secret: str | None = Field(None, pattern=r"^(env|file):.+", examples=["env:CALLBACK_SECRET"])
    """Secret reference signing the deliveries (default: the server's ``[callbacks] secret``)."""


class RunCreate(BaseModel):
    """``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=220, examples=["refund_triage", "refund_triage@2"])
    """``name`` (latest version) or ``name@version``."""
    input: dict[str, Any] = Field(default_factory=dict)
    """Initial state; checked against the workflow's ``input`` schema (422 names the path)."""
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    """Higher runs first when queued."""
    wait: bool = False
    """Answer only once the run ended or parked (or ``wait_timeout`` passed)."""
    wait_timeout: float | None = Field(None, gt=0)
    """Seconds to wait at most; capped by the server's limit (30 s by default)."""
    callback: Callback | None = None
    """POST the final run document (and, with ``events``, each event) to this URL."""


class Decision(BaseModel):
    """``POST /v1/runs/{id}/approve`` and ``/reject``; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(None, max_length=10_000)
    data: Any = None
    """Checked against the approval node's ``form`` schema when approving."""
    node: str | None = None
    """Which approval node, when the run waits at several."""


class Rollback(BaseModel):
    """``POST /v1/runs/{id}/rollback``."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=200)
    """A state version from ``GET /v1/runs/{id}/history``."""


class Registered(BaseModel):
    """``POST /v1/workflows``: 201 when the version is new, 200 when identical content existed."""

    name: str
    version: int
    hash: str


class RunDocument(BaseModel):
    """A run, as ``GET /v1/runs/{id}`` and every run action answer it."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = Field(
        examples=["queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled"]
    )
    workflow: str
    version: int
    hash: str
    input: Any
    output: Any
    error: dict[str, Any] | None
    priority: int
    options: dict[str, Any] | None
    waiting_for: dict[str, Any] | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


class RunPage(BaseModel):
    """``GET /v1/runs``: newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    runs: list[RunDocument]
    next_cursor: str | None


class Event(BaseModel):
    """One event of a run's log (also the ``data:`` of an SSE frame and a WebSocket message)."""

    run_id: str
    seq: int
    ts: str
    type: str
    node: str | None
    attempt: int | None
    data: dict[str, Any] | None


class EventPage(BaseModel):
    """``GET /v1/runs/{id}/events``; ``next_after`` is set when more events may follow."""

    run_id: str
    events: list[Event]
    next_after: int | None


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}, "description": "Problem"}
        for status in statuses
    }
