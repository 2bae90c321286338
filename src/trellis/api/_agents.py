"""``/v1/agents``, ``/v1/breakers`` and ``/v1/system-events``: the agent registry and its guards.

An agent document is ``{name, ...spec, enabled, healthy, health_changed_at, last_probe_at,
revision, created_at, updated_at}`` (the spec with every default filled in, see
:class:`~trellis.agents.AgentSpec`). A spec is checked before it is stored: an invalid one is a
422 problem whose ``details.path`` is the JSON pointer of the first bad field (and
``details.errors`` lists them all). ``auth.secret`` is always a *reference*
(``env:NAME``, ``file:/path``); a secret sent in clear is refused, never stored or echoed.

* ``POST /v1/agents`` ``{name, ...spec, enabled?}`` → 201 (409 when the name is taken).
* ``PATCH /v1/agents/{name}`` ``{...fields}``: a JSON merge patch (RFC 7386) of the spec —
  nested policies merge field by field, ``null`` removes a field (back to its default); ``PUT``
  replaces the whole spec (omitted fields go back to their defaults). Both answer the document
  with ``changed`` (false when the request changed nothing) and accept ``enabled`` too; the
  read-only fields of a document (:data:`trellis.agents.READ_ONLY`) are ignored, so a document
  read with ``GET`` can be sent back.
* ``POST /v1/agents/{name}/enable|disable``; ``GET /v1/agents/{name}/health``.

Breakers are keyed ``agent:<name>`` and ``http:<host:port>``; a breaker exists once a call has
used it. ``POST /v1/breakers/{key}/reset`` closes one by hand (``breaker.closed`` with ``by``).
``GET /v1/system-events`` pages through ``breaker.*`` and ``agent.*`` events, oldest first.
Registering and changing agents needs the ``register`` permission, resetting a breaker
``control`` (both: operator, admin); reading needs ``read``. Every mutating call is in the audit
log (see :mod:`trellis.api._access`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query

from trellis.agents import agent_fields
from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import problems
from trellis.api._problems import Json
from trellis.auth import Permission, Principal
from trellis.errors import NotFound, ValidationError
from trellis.resilience import breaker_document
from trellis.store import AgentRecord, BreakerRecord

Ctx = Annotated[ApiContext, Depends(context)]
Name = Annotated[str, Path(min_length=1, max_length=200)]
Fields = Annotated[dict[str, Any], Body(description="Agent spec fields (see AgentSpec).")]
Operator = Annotated[Principal, require(Permission.CONTROL)]
READ = [require(Permission.READ)]
REGISTER = [require(Permission.REGISTER)]

agents = APIRouter(prefix="/v1/agents", tags=["agents"])
breakers = APIRouter(prefix="/v1/breakers", tags=["breakers"])
events = APIRouter(prefix="/v1/system-events", tags=["breakers"])


# -- agents -------------------------------------------------------------------------------------


def agent_document(record: AgentRecord, *, changed: bool | None = None) -> dict[str, Any]:
    """The agent's document (what ``trellis agents ... --json`` prints too)."""
    doc = record.to_dict()
    if changed is not None:
        doc["changed"] = changed
    return doc


@agents.post(
    "",
    summary="Register an agent",
    status_code=201,
    response_model=None,
    responses=problems(409, 422),
    dependencies=REGISTER,
)
async def register_agent(body: Fields, ctx: Ctx) -> Json:
    """``{name, base_url, ...}`` → the agent document; 409 when ``name`` is taken."""
    name, spec, enabled = agent_fields(body, None)
    if not name:
        raise ValidationError("an agent needs a name", details={"path": "/name"})
    record = await ctx.engine.register_agent(name, spec, enabled=True if enabled is None else enabled)
    return Json(agent_document(record), status_code=201, headers={"Location": f"/v1/agents/{name}"})


@agents.get("", summary="List agents", dependencies=READ)
async def list_agents(ctx: Ctx) -> Json:
    """``{agents: [agent document, ...]}``, by name."""
    return Json({"agents": [agent_document(r) for r in await ctx.engine.store.list_agents()]})


@agents.get("/{name}", summary="One agent", responses=problems(404), dependencies=READ)
async def get_agent(name: Name, ctx: Ctx) -> Json:
    return Json(agent_document(await ctx.engine.get_agent(name)))


async def _update(ctx: ApiContext, name: str, body: Mapping[str, Any], *, replace: bool) -> Json:
    _, spec, enabled = agent_fields(body, name)
    record, changed = await ctx.engine.change_agent(name, spec, enabled=enabled, replace=replace)
    return Json(agent_document(record, changed=changed))


@agents.patch(
    "/{name}",
    summary="Change some fields of an agent",
    response_model=None,
    responses=problems(404, 422),
    dependencies=REGISTER,
)
async def patch_agent(name: Name, body: Fields, ctx: Ctx) -> Json:
    """A JSON merge patch of the spec (nested policies merge, ``null`` removes a field);
    answers the document with ``changed``."""
    return await _update(ctx, name, body, replace=False)


@agents.put(
    "/{name}",
    summary="Replace an agent's spec",
    response_model=None,
    responses=problems(404, 422),
    dependencies=REGISTER,
)
async def put_agent(name: Name, body: Fields, ctx: Ctx) -> Json:
    """The whole spec (omitted fields take their defaults); answers the document with ``changed``."""
    return await _update(ctx, name, body, replace=True)


@agents.post(
    "/{name}/enable",
    summary="Enable an agent",
    response_model=None,
    responses=problems(404),
    dependencies=REGISTER,
)
async def enable_agent(name: Name, ctx: Ctx) -> Json:
    return Json(agent_document(await ctx.engine.set_agent_enabled(name, True)))


@agents.post(
    "/{name}/disable",
    summary="Disable an agent (its calls fail with AgentUnavailable)",
    response_model=None,
    responses=problems(404),
    dependencies=REGISTER,
)
async def disable_agent(name: Name, ctx: Ctx) -> Json:
    return Json(agent_document(await ctx.engine.set_agent_enabled(name, False)))


@agents.get("/{name}/health", summary="An agent's health", responses=problems(404), dependencies=READ)
async def agent_health(name: Name, ctx: Ctx) -> Json:
    """``{agent, enabled, healthy, changed_at, window_seconds, threshold, samples, successes,
    failures, success_rate, latency_ms: {p50, p95}, probes, calls, last_probe, breaker}``."""
    return Json(await ctx.engine.agent_health(name))


# -- breakers -----------------------------------------------------------------------------------


async def _breaker(ctx: ApiContext, key: str) -> BreakerRecord:
    record = await ctx.engine.store.get_breaker(key)
    if record is None:
        raise NotFound(
            f"no circuit breaker {key!r} (a breaker exists once a call has used it; see /v1/breakers)",
            details={"key": key},
        )
    return record


@breakers.get("", summary="List circuit breakers", dependencies=READ)
async def list_breakers(ctx: Ctx) -> Json:
    """``{breakers: [{key, state, policy, recent_failures, opened_at, next_trial_at, ...}]}``, by key."""
    return Json({"breakers": [breaker_document(r) for r in await ctx.engine.store.list_breakers()]})


@breakers.get("/{key:path}", summary="One circuit breaker", responses=problems(404), dependencies=READ)
async def get_breaker(key: str, ctx: Ctx) -> Json:
    return Json(breaker_document(await _breaker(ctx, key)))


@breakers.post(
    "/{key:path}/reset",
    summary="Close a circuit breaker by hand",
    response_model=None,
    responses=problems(404),
)
async def reset_breaker(key: str, ctx: Ctx, who: Operator) -> Json:
    """Forgets its failures and closes it; records ``breaker.closed`` with ``by`` = the caller."""
    return Json(breaker_document(await ctx.engine.reset_breaker(key, actor=who.name)))


# -- system events ------------------------------------------------------------------------------


@events.get("", summary="Events outside runs (breaker.*, agent.*)", dependencies=READ)
async def system_events(
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, description="Only events with a greater id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type_prefix: Annotated[
        str | None,
        Query(alias="type", max_length=100, description="Type prefix, e.g. `breaker.` or `agent.unhealthy`."),
    ] = None,
    subject: Annotated[str | None, Query(description="Only events about this breaker key or agent.")] = None,
) -> Json:
    """``{events: [{id, ts, type, subject, data}], next_after}`` (set when more may follow)."""
    found = await ctx.engine.system_events(after=after, limit=limit, type_prefix=type_prefix, subject=subject)
    next_after = found[-1].id if len(found) == limit else None
    return Json({"events": [e.to_dict() for e in found], "next_after": next_after})


router = APIRouter()
for _part in (agents, breakers, events):
    router.include_router(_part)
