"""Every error the API answers is an RFC 9457 problem document (``application/problem+json``).

* :class:`~trellis.errors.WorkflowError` (and the auth errors derived from it) render with their
  own ``to_problem()`` and HTTP status: 404 unknown run or workflow, 409 conflict, 422 invalid
  input or definition, 401/403 access.
* FastAPI's request validation errors become a 422 listing every invalid field with its
  location (``body.input``, ``query.limit``, ``header.idempotency-key``); a body that is not
  JSON at all is a 400 naming the position of the syntax error.
* Starlette's HTTP errors (unknown route 404, wrong method 405, ...) keep their status.
* Anything else is a 500 that says nothing about internals (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from trellis.errors import PROBLEM_BASE, WorkflowError

log = logging.getLogger("trellis.api")

PROBLEM_JSON: Final = "application/problem+json"

_TITLES: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    500: "InternalError",
    503: "Unavailable",
}


def json_default(value: Any) -> Any:
    """JSON for what ``json.dumps`` does not know: timestamps as ISO strings, the rest as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(value)


class Json(JSONResponse):
    """A JSON response that also renders timestamps and other non-JSON values in state documents."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=json_default, ensure_ascii=False, separators=(",", ":")).encode()


def problem(
    status: int, detail: str, *, name: str | None = None, instance: str | None = None, **extra: Any
) -> Json:
    """A problem response built from parts (for errors that are not a :class:`WorkflowError`)."""
    title = name or _TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + title,
        "title": title,
        "status": status,
        "detail": detail,
        "error": title,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return Json(body, status_code=status, media_type=PROBLEM_JSON)


def problem_of(exc: WorkflowError, instance: str | None = None) -> Json:
    """The problem response of a Trellis error, with its own HTTP status."""
    body = exc.to_problem(instance=instance)
    headers = {"WWW-Authenticate": 'Bearer realm="trellis"'} if exc.status == 401 else None
    return Json(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _message(error: Any) -> str:
    if tuple(error.get("loc", ())) == ("body",) and error.get("type") == "model_attributes_type":
        return "the body must be a JSON object, sent with Content-Type: application/json"
    return str(error.get("msg", ""))


def validation_problem(errors: Sequence[Any], instance: str) -> Json:
    """422 listing each invalid field, or 400 when the body is not parseable JSON."""
    for error in errors:
        if error.get("type") == "json_invalid":
            position = error.get("loc", ("body", "?"))[-1]
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            return problem(
                400,
                f"the request body is not valid JSON: {reason} at character {position}",
                name="MalformedRequest",
                instance=instance,
            )
    fields = [
        {"location": _location(e.get("loc", ())), "message": _message(e), "type": e.get("type", "")}
        for e in errors
    ]
    summary = "; ".join(f"{f['location']}: {f['message']}" for f in fields)
    return problem(
        422,
        f"{len(fields)} invalid field(s) in the request: {summary}",
        name="RequestValidationError",
        instance=instance,
        errors=fields,
    )


async def _on_workflow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WorkflowError)
    return problem_of(exc, instance=request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(exc.errors(), request.url.path)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /openapi.json for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    response = problem(exc.status_code, str(detail), instance=request.url.path)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        500,
        f"internal error while handling {request.method} {request.url.path}; the server log has details",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as a problem document."""
    app.add_exception_handler(WorkflowError, _on_workflow_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
