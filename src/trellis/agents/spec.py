"""What an agent is: where it lives, how it is called, and the policies that guard it.

An agent's spec is stored as a JSON document (see :class:`AgentSpec`). Credentials are never
part of it: :class:`AuthSpec` holds a *reference* (``env:NAME`` or ``file:/path``) that is
resolved at call time in the process making the call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.dsl.models import RetrySpec
from trellis.errors import AgentUnavailable, ValidationError
from trellis.resilience.breaker import BreakerPolicy

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")
"""Agent names: lower-case letters, digits, ``.``, ``_`` and ``-``; at most 200 characters."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSpec(_Spec):
    """The header an agent wants, with its value taken from a secret reference at call time."""

    header: str = "Authorization"
    scheme: str | None = "Bearer"
    """Prefix of the value (``Bearer <secret>``); ``None`` sends the secret as the whole value."""
    secret: str
    """``env:NAME`` (an environment variable) or ``file:/path`` (e.g. a mounted secret)."""

    @field_validator("secret")
    @classmethod
    def _reference(cls, value: str) -> str:
        kind, _, rest = value.partition(":")
        if kind not in ("env", "file") or not rest:
            raise ValueError(
                "must be a secret reference, env:NAME or file:/path (the secret itself is never stored)"
            )
        return value

    def value(self, agent: str) -> str:
        """The header value; :class:`AgentUnavailable` when the secret cannot be read."""
        kind, _, rest = self.secret.partition(":")
        if kind == "env":
            secret = os.environ.get(rest)
            if not secret:
                raise AgentUnavailable(
                    f"agent {agent!r}: environment variable {rest} (its secret) is not set"
                )
        else:
            try:
                secret = Path(rest).read_text().strip()
            except OSError as exc:
                raise AgentUnavailable(
                    f"agent {agent!r}: cannot read its secret file {rest}: {exc.strerror}"
                ) from exc
        return secret if self.scheme is None else f"{self.scheme} {secret}"


class HealthPolicy(_Spec):
    """How an agent's health is probed and judged."""

    probe_interval_seconds: float = Field(default=10.0, ge=0.05)
    """How often one process (of all that share the store) probes ``health_path``."""
    probe_timeout_seconds: float = Field(default=5.0, gt=0)
    window_seconds: float = Field(default=60.0, gt=0)
    """Rolling window of probes and calls the success rate and latencies are computed over."""
    min_samples: int = Field(default=3, ge=1)
    """Fewest outcomes in the window before the agent can be judged unhealthy."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    """Success rate below which the agent is unhealthy."""
    recover_after: int = Field(default=2, ge=1)
    """Consecutive successful probes that make an unhealthy agent healthy again."""


class AgentSpec(_Spec):
    """An agent's registration (everything but its name)."""

    base_url: str
    """Where the agent lives, e.g. ``http://127.0.0.1:9100/nlp``."""
    invoke_path: str = "/invoke"
    """Path ``agent`` nodes POST their input to (a node may set its own ``path``)."""
    health_path: str | None = "/health"
    """Path probed with GET; ``None`` = judged by its calls alone."""
    timeout_seconds: float = Field(default=30.0, gt=0)
    """Time limit of one call."""
    retry: RetrySpec | None = None
    """Retry policy of ``agent`` nodes calling it that set none of their own."""
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    auth: AuthSpec | None = None
    response_schema: dict[str, Any] | None = None
    """JSON Schema (2020-12) every answer must match; a mismatch is a ``ValidationError``."""
    description: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {value!r}")
        return value.rstrip("/")

    @field_validator("invoke_path", "health_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/', not {value!r}")
        return value

    @field_validator("response_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                where = "/" + "/".join(str(p) for p in exc.path)
                raise ValueError(f"is not a valid JSON Schema at {where}: {exc.message}") from None
        return value

    def document(self) -> dict[str, Any]:
        """The JSON document stored and served (defaults included, so readers see the policies)."""
        return self.model_dump(mode="json")

    def url(self, path: str | None = None) -> str:
        return self.base_url + (path or self.invoke_path)


def check_name(name: str) -> str:
    """``name`` if it is a valid agent name, else :class:`ValueError` saying why."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"agent name {name!r} is invalid: use lower-case letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit), at most 200 characters"
        )
    return name


READ_ONLY: Final = frozenset(
    {"healthy", "health_changed_at", "last_probe_at", "revision", "created_at", "updated_at", "changed"}
)
"""Fields of an agent document that a client cannot set (ignored in a body, so a document read
with ``GET`` can be sent back with ``PUT``)."""


def agent_fields(body: Mapping[str, Any], name: str | None) -> tuple[str | None, dict[str, Any], bool | None]:
    """``(name, spec fields, enabled)`` of a request body or ``--file`` document.

    Raises:
        ValidationError: ``name`` or ``enabled`` of the wrong kind, or a name other than ``name``
            (agents cannot be renamed).
    """
    fields = {k: v for k, v in body.items() if k not in READ_ONLY}
    given = fields.pop("name", None)
    if given is not None and not isinstance(given, str):
        raise ValidationError(f"name must be a string, not {type(given).__name__}", details={"path": "/name"})
    if name is not None and given is not None and given != name:
        raise ValidationError(
            f"the document names agent {given!r}, not {name!r}; agents cannot be renamed",
            details={"path": "/name"},
        )
    enabled = fields.pop("enabled", None)
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError(f"enabled must be true or false, not {enabled!r}", details={"path": "/enabled"})
    return given or name, fields, enabled
