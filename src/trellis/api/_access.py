"""Authentication, authorisation and the audit trail of the API.

:class:`AccessMiddleware` authenticates every request to ``/v1`` and ``/ws`` (HTTP and
WebSocket) before routing, so a missing or invalid key is a 401 whatever else is wrong with the
request, and records every mutating call (``POST``, ``PUT``, ``PATCH``, ``DELETE``) in the audit
log with its caller and answer. Each route then declares the permission it needs with
:func:`require` (403 when the caller's role lacks it); the matrix is in :mod:`trellis.auth`.

Keys are read from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; streams (SSE and
WebSocket, which browsers open without custom headers) also accept ``?api_key=<key>``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trellis.api._problems import problem_of
from trellis.auth import GRANTS, Forbidden, Permission, Principal, Unauthorized

if TYPE_CHECKING:
    from trellis.api._app import ApiContext

log = logging.getLogger("trellis.api")

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
PROTECTED_PREFIXES: Final = ("/v1/", "/ws")
SIGNED_PREFIXES: Final = ("/v1/hooks/",)
"""Webhooks in: authenticated by each delivery's HMAC signature (``trellis.triggers``), not API keys."""


def _presented_key(scope: Scope) -> str | None:
    headers: dict[str, str] = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
    }
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    if scope["type"] == "websocket" or scope["path"].endswith("/stream"):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("api_key"):
            return str(query["api_key"][0])
    return None


class AccessMiddleware:
    """Authenticates ``/v1`` and ``/ws`` requests and audits the mutating ones."""

    def __init__(self, app: ASGIApp, *, context: ApiContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        audited = scope["type"] == "http" and scope["method"] not in SAFE_METHODS
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["path"].startswith(SIGNED_PREFIXES):
                state["actor"] = "webhook"
                await self.app(scope, receive, recording_send if audited else send)
                return
            try:
                state["principal"] = await self.context.keys.authenticate(_presented_key(scope))
            except Unauthorized as exc:
                state["actor"] = "unauthenticated"
                await self._refuse(exc, scope, receive, recording_send)
                return
            await self.app(scope, receive, recording_send if audited else send)
        finally:
            if audited:
                await self._audit(scope, state, status)

    async def _refuse(self, exc: Unauthorized, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await problem_of(exc, instance=scope["path"])(scope, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4401, "reason": exc.message[:120]})

    async def _audit(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        principal: Principal | None = state.get("principal")
        run_id = state.get("run_id") or (scope.get("path_params") or {}).get("run_id")
        try:
            await self.context.engine.store.record_audit(
                actor=principal.name if principal else state.get("actor", "unknown"),
                role=principal.role.value if principal else None,
                method=scope["method"],
                path=scope["path"],
                run_id=run_id,
                status=status,
            )
        except Exception:  # the answer is sent; a lost audit row must not turn it into an error
            log.exception("could not record the audit row of %s %s", scope["method"], scope["path"])


def caller(connection: HTTPConnection) -> Principal:
    """The authenticated caller (set by :class:`AccessMiddleware`)."""
    principal: Principal | None = getattr(connection.state, "principal", None)
    if principal is None:
        raise Unauthorized("the request was not authenticated")
    return principal


def require(permission: Permission) -> Any:
    """A dependency that answers 403 unless the caller's role grants ``permission``."""

    async def check(connection: HTTPConnection) -> Principal:
        principal = caller(connection)
        run_id = connection.path_params.get("run_id")
        if run_id is not None:
            connection.state.run_id = run_id
        if not principal.can(permission):
            roles = ", ".join(role.value for role, grants in GRANTS.items() if permission in grants)
            method = connection.scope.get("method", "WEBSOCKET")
            raise Forbidden(
                f"{principal.name!r} has role {principal.role.value!r}, which may not {permission.value}: "
                f"{method} {connection.url.path} needs one of the roles {roles}",
                details={"role": principal.role.value, "permission": permission.value},
            )
        return principal

    return Depends(check)
