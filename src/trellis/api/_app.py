"""The application: :func:`create_app` wires the routers, access control and error rendering.

The app serves an :class:`~trellis.runtime.Engine` that its caller opened (``trellis serve``, a
test); it opens and closes nothing itself, so the same engine can also drive an embedded
worker in the same event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from trellis._version import __version__
from trellis.api._access import AccessMiddleware
from trellis.api._problems import install_problem_handlers
from trellis.auth import KeyRing
from trellis.runtime import Engine


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Tunables of the API; the defaults suit production.

    .. versionadded:: 0.1
    """

    keep_alive_seconds: float = 15.0
    """An idle SSE stream sends a ``: keep-alive`` comment this often, so proxies keep it open."""
    stream_poll_seconds: float = 1.0
    """A stream also reads the store this often when idle, so it misses nothing even when live
    notifications cannot reach this process (SQLite with a separate ``trellis worker``)."""
    wait_timeout_seconds: float = 30.0
    """Longest a ``POST /v1/runs`` with ``"wait": true`` waits for the run to end or park."""
    auth_refresh_seconds: float = 5.0
    """How long the active API keys are cached; a created or revoked key takes effect within it."""
    max_definition_bytes: int = 1 << 20
    """Largest workflow definition ``POST /v1/workflows`` accepts (413 beyond)."""


@dataclass
class ApiContext:
    """What every route needs: the engine, the settings, the key ring, and the shutdown signal."""

    engine: Engine
    settings: ApiSettings
    keys: KeyRing
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server shuts down: open streams end instead of holding the shutdown up."""

    def close_streams(self) -> None:
        """End every open SSE and WebSocket stream (call on shutdown)."""
        self.closing.set()


def api_context(connection: HTTPConnection) -> ApiContext:
    """The :class:`ApiContext` of the app serving ``connection``."""
    ctx: ApiContext = connection.app.state.trellis
    return ctx


async def context(connection: HTTPConnection) -> ApiContext:
    """:func:`api_context` as a FastAPI dependency.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency on a worker
    thread, a hand-off per request for an attribute read.
    """
    return api_context(connection)


def create_app(engine: Engine, *, settings: ApiSettings | None = None) -> FastAPI:
    """The Trellis REST API (DESIGN §4) over an open engine.

    Args:
        engine: an engine opened with :meth:`Engine.open`; the caller closes it.
        settings: stream, wait and auth tunables; see :class:`ApiSettings`.

    Example:
        ::

            async with Engine.open(Settings.load()) as engine:
                app = create_app(engine)
                await uvicorn.Server(uvicorn.Config(app, port=8000)).serve()

    .. versionadded:: 0.1
    """
    from trellis.api import (
        _actions,
        _agents,
        _metrics,
        _node_exec,
        _observability,
        _ops,
        _runs,
        _streams,
        _triggers,
        _ui,
        _workflows,
    )

    settings = settings or ApiSettings()
    ctx = ApiContext(
        engine=engine,
        settings=settings,
        keys=KeyRing(engine.store, refresh_seconds=settings.auth_refresh_seconds),
    )
    app = FastAPI(
        title="Trellis",
        version=__version__,
        summary="Run LangGraph workflows durably: register, run, follow, approve, steer.",
        description=(
            "Errors are RFC 9457 problem documents (`application/problem+json`). Authenticate with "
            "`Authorization: Bearer trl_...` or `X-API-Key`; with no keys configured the API is open."
        ),
    )
    app.state.trellis = ctx
    install_problem_handlers(app)
    app.add_middleware(AccessMiddleware, context=ctx)
    for module in (
        _ops,
        _metrics,
        _workflows,
        _runs,
        _actions,
        _streams,
        _agents,
        _observability,
        _ui,
        _triggers,
        _node_exec,
    ):
        app.include_router(module.router)
    return app
