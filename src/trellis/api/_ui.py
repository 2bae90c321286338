"""The dashboard: static files shipped in :mod:`trellis.ui`, served at ``/`` and ``/ui/...``.

Nothing is built at install time: plain HTML, JavaScript modules and CSS. The page talks to the
same REST API as any client, with the API key the user enters once (kept in the browser's
``localStorage``), so these routes need no key and serve nothing but the files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath
from typing import Final

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.responses import Response

router = APIRouter(include_in_schema=False)

MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _file(name: str) -> Response:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or path.suffix not in MEDIA_TYPES:
        raise HTTPException(404, f"no dashboard file {name!r}")
    resource = resources.files("trellis.ui").joinpath(*path.parts)
    if not resource.is_file():
        raise HTTPException(404, f"no dashboard file {name!r}")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(resource.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/")
async def index() -> Response:
    """The dashboard's single page (it routes with ``#/...`` fragments)."""
    return _file("index.html")


@router.get("/ui/{name:path}")
async def asset(name: str) -> Response:
    return _file(name)
