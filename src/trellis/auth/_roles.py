"""Who may do what: roles, the permissions each one grants, and the caller of a request.

The matrix (every API route needs exactly one permission; ``/healthz``, ``/readyz`` and the
OpenAPI document need none):

==============  ======  ========  ========  =====
permission      viewer  operator  approver  admin
==============  ======  ========  ========  =====
``read``          ✓        ✓         ✓        ✓     every ``GET``: workflows, runs, nodes, events,
                                                    streams (SSE, WebSocket), state, history,
                                                    diffs, ``/v1/queue``, agents, breakers
``register``               ✓                  ✓     ``POST /v1/workflows``; ``POST|PATCH|PUT
                                                    /v1/agents...`` (register, change, enable)
``submit``                 ✓                  ✓     ``POST /v1/runs``
``control``                ✓                  ✓     ``POST /v1/runs/{id}/cancel|pause|resume|
                                                    retry|rollback``, ``POST /v1/breakers/{key}/
                                                    reset``
``decide``                           ✓        ✓     ``POST /v1/runs/{id}/approve|reject``
``audit``                                     ✓     ``GET /v1/audit``
==============  ======  ========  ========  =====

Roles are ordered by reach (``viewer < operator < approver < admin``) but are *not* nested:
an approver decides gates and reads, and cannot start or steer runs, so the pipeline that
starts a run (an ``operator`` key) cannot also approve it. Keys themselves are managed with
``trellis keys`` on a machine with database access, never over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Permission(StrEnum):
    """One thing a caller may do (see the matrix in the module docstring)."""

    READ = "read"
    REGISTER = "register"
    SUBMIT = "submit"
    CONTROL = "control"
    DECIDE = "decide"
    AUDIT = "audit"


class Role(StrEnum):
    """What an API key is for."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def permissions(self) -> frozenset[Permission]:
        """What this role may do."""
        return GRANTS[self]


GRANTS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.REGISTER, Permission.SUBMIT, Permission.CONTROL}),
    Role.APPROVER: frozenset({Permission.READ, Permission.DECIDE}),
    Role.ADMIN: frozenset(Permission),
}
"""The role/permission matrix, as data."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request, as authenticated."""

    name: str
    """The key's name (``ci``, ``alice``), or ``anonymous`` when no keys are configured."""
    role: Role
    key_id: str | None = None
    """Public id of the key used, ``None`` for the anonymous caller of an open API."""

    def can(self, permission: Permission) -> bool:
        """Whether this caller's role grants ``permission``."""
        return permission in self.role.permissions

    def __repr__(self) -> str:
        return f"Principal(name={self.name!r}, role={self.role.value!r}, key_id={self.key_id!r})"


ANONYMOUS: Final = Principal(name="anonymous", role=Role.ADMIN)
"""The caller of an API that has no keys configured: it may do everything (bind to loopback!)."""
