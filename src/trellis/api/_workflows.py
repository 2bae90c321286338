"""``/v1/workflows``: register definitions (JSON or YAML), list them, show versions and graphs.

Versions are immutable: registering content identical to an existing version answers 200 with
that version; changed content becomes the next version (201). An invalid definition is a 422
problem whose ``details.diagnostics`` lists every problem with its JSON-pointer path (and line
and column, for YAML).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from trellis.api._access import require
from trellis.api._app import ApiContext, context
from trellis.api._models import Registered, problems
from trellis.api._problems import Json, problem
from trellis.auth import Permission
from trellis.compiler import mermaid
from trellis.dsl import Workflow, content_hash, load_document
from trellis.dsl.walk import walk
from trellis.errors import NotFound
from trellis.store import WorkflowRecord

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

YAML_TYPES: Final = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
Name = Annotated[str, Path(min_length=1, max_length=200)]
Version = Annotated[int, Path(ge=1)]


def summary(record: WorkflowRecord) -> dict[str, Any]:
    """A version without its definition: ``{name, version, hash, kind, description, created_at}``."""
    doc = record.to_dict()
    return {
        "name": doc["name"],
        "version": doc["version"],
        "hash": doc["hash"],
        "kind": doc["kind"],
        "description": (record.definition or {}).get("description"),
        "created_at": doc["created_at"],
    }


async def _read_definition(request: Request, limit: int) -> tuple[str | dict[str, Any], Any] | Response:
    """``(what to register, parsed data)``, or the problem response explaining why not."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    is_yaml = media in YAML_TYPES
    if not is_yaml and media != "application/json" and not media.endswith("+json"):
        return problem(
            415,
            f"Content-Type {media!r} is not accepted: send the definition as application/json or "
            "application/yaml",
            instance=request.url.path,
        )
    body = await request.body()
    if len(body) > limit:
        return problem(
            413, f"the definition is {len(body)} bytes; the limit is {limit}", instance=request.url.path
        )
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        return problem(
            400, f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}", instance=request.url.path
        )
    if is_yaml:
        return text, load_document(text, "<request body>").data
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return problem(
            400,
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            name="MalformedRequest",
            instance=request.url.path,
        )
    if not isinstance(data, dict):
        return problem(
            422,
            f"a definition is a JSON object, not {type(data).__name__}",
            name="DefinitionError",
            instance=request.url.path,
        )
    return data, data


@router.post(
    "",
    summary="Register a workflow definition",
    status_code=201,
    response_model=None,
    responses={201: {"model": Registered}, 200: {"model": Registered}, **problems(400, 413, 415, 422)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
    dependencies=[require(Permission.REGISTER)],
)
async def register(request: Request, ctx: Annotated[ApiContext, Depends(context)]) -> Response:
    """JSON body, or YAML with ``Content-Type: application/yaml``. Answers ``{name, version, hash}``."""
    parsed = await _read_definition(request, ctx.settings.max_definition_bytes)
    if isinstance(parsed, Response):
        return parsed
    source, data = parsed
    existed = False
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        digest = content_hash(data)
        versions = await ctx.engine.store.list_workflow_versions(data["name"])
        existed = any(v.hash == digest for v in versions)
    record = await ctx.engine.register(source, filename="<request body>")
    body = {"name": record.name, "version": record.version, "hash": record.hash}
    location = f"/v1/workflows/{record.name}/versions/{record.version}"
    return Json(body, status_code=200 if existed else 201, headers={"Location": location})


@router.get("", summary="List workflows (latest version of each)", dependencies=[require(Permission.READ)])
async def list_workflows(ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    """``{workflows: [{name, version, hash, kind, description, created_at}]}``."""
    records = await ctx.engine.store.list_workflows()
    return Json({"workflows": [summary(r) for r in records]})


async def _version(ctx: ApiContext, name: str, version: int | None) -> WorkflowRecord:
    record = await ctx.engine.store.get_workflow(name, version)
    if record is None:
        what = f"{name}@{version}" if version is not None else name
        raise NotFound(f"workflow {what!r} is not registered", details={"workflow": name, "version": version})
    return record


@router.get(
    "/{name}",
    summary="The latest version of a workflow",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def get_workflow(name: Name, ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    """The latest version's document (definition and source included) and every version number."""
    record = await _version(ctx, name, None)
    versions = await ctx.engine.store.list_workflow_versions(name)
    return Json({**record.to_dict(), "versions": [v.version for v in versions]})


@router.get(
    "/{name}/versions",
    summary="Every version of a workflow",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def list_versions(name: Name, ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    """``{versions: [...]}``, oldest first."""
    versions = await ctx.engine.store.list_workflow_versions(name)
    if not versions:
        raise NotFound(f"workflow {name!r} is not registered", details={"workflow": name})
    return Json({"versions": [summary(v) for v in versions]})


@router.get(
    "/{name}/versions/{version}",
    summary="One version of a workflow",
    responses=problems(404, 422),
    dependencies=[require(Permission.READ)],
)
async def get_version(name: Name, version: Version, ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    return Json((await _version(ctx, name, version)).to_dict())


def _graph(ctx: ApiContext, record: WorkflowRecord) -> dict[str, Any]:
    if record.definition is None:  # a Python workflow: draw what LangGraph compiled
        compiled = ctx.engine.compiler.compile_python(record.name, record.version, record.hash)
        drawn = compiled.graph.get_graph()
        text = drawn.draw_mermaid()
        nodes = [{"id": node_id, "type": "python", "scope": ""} for node_id in drawn.nodes]
    else:
        workflow = Workflow.model_validate(record.definition)
        text = mermaid(workflow)
        nodes = [{"id": ref.id, "type": ref.node.type, "scope": ref.scope} for ref in walk(workflow)]
    return {
        "name": record.name,
        "version": record.version,
        "format": "mermaid",
        "mermaid": text,
        "nodes": nodes,
    }


@router.get(
    "/{name}/graph",
    summary="Mermaid flowchart of the latest version",
    responses=problems(404),
    dependencies=[require(Permission.READ)],
)
async def graph(name: Name, ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    """``{name, version, format: "mermaid", mermaid, nodes: [{id, type, scope}]}``."""
    return Json(_graph(ctx, await _version(ctx, name, None)))


@router.get(
    "/{name}/versions/{version}/graph",
    summary="Mermaid flowchart of one version",
    responses=problems(404, 422),
    dependencies=[require(Permission.READ)],
)
async def version_graph(name: Name, version: Version, ctx: Annotated[ApiContext, Depends(context)]) -> Json:
    return Json(_graph(ctx, await _version(ctx, name, version)))
