"""What each kind of trigger is configured with, validated; secrets; the input mapping.

A trigger is stored as ``{name, kind, workflow, spec}``; ``spec`` is one of the models below,
by ``kind``. Secrets are never stored: a spec holds a *reference* (``env:NAME`` or
``file:/path``, as agents do) that is read when a signature is checked or made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from trellis.dsl.models import ScheduleSpec
from trellis.errors import ExpressionError, ValidationError, WorkflowError
from trellis.expressions import compile_expression

TriggerKind = Literal["schedule", "webhook", "nats", "redis"]
KINDS: Final = ("schedule", "webhook", "nats", "redis")
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


def check_secret_reference(value: str) -> str:
    """``value`` if it is ``env:NAME`` or ``file:/path``; the secret itself is never accepted."""
    kind, _, rest = value.partition(":")
    if kind not in ("env", "file") or not rest:
        raise ValueError(
            "must be a secret reference, env:NAME or file:/path (the secret itself is never stored)"
        )
    return value


class SecretUnavailable(WorkflowError):
    """A secret reference points at nothing readable on this server (HTTP 503)."""

    name = "SecretUnavailable"
    status = 503


def read_secret(reference: str, what: str) -> bytes:
    """The secret a reference points at; :class:`SecretUnavailable` naming ``what`` when unreadable."""
    kind, _, rest = reference.partition(":")
    if kind == "env":
        value = os.environ.get(rest)
        if not value:
            raise SecretUnavailable(f"{what}: environment variable {rest} (its secret) is not set")
        return value.encode()
    try:
        return Path(rest).read_text().strip().encode()
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot read its secret file {rest}: {exc.strerror}") from exc


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Mapped(_Spec):
    input: str | None = Field(default=None, max_length=4000)
    """CEL expression over ``body`` (the payload as JSON) giving the run input; default: ``body``."""

    @field_validator("input")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_expression(value)
            except ExpressionError as exc:
                raise ValueError(exc.message) from None
        return value


class WebhookSpec(_Mapped):
    """``POST /v1/hooks/{name}``: authenticated by an HMAC-SHA256 signature of the raw body."""

    secret: str
    """Reference to the shared secret: ``env:NAME`` or ``file:/path``."""
    signature_header: str = "X-Trellis-Signature"
    """Header carrying ``sha256=<hex HMAC of the body>`` (GitHub's style)."""
    delivery_header: str = "X-Trellis-Delivery"
    """Header carrying the sender's delivery id; a delivery id seen before starts no run."""

    @field_validator("secret")
    @classmethod
    def _reference(cls, value: str) -> str:
        return check_secret_reference(value)


class NatsSpec(_Mapped):
    """Runs from messages of a NATS JetStream stream (a durable pull consumer)."""

    url: str = "nats://127.0.0.1:4222"
    stream: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    """Subject (wildcards allowed) the consumer filters on."""
    durable: str | None = None
    """Durable consumer name, shared by every Trellis process; default ``trellis-<trigger>``."""
    create_stream: bool = True
    """Create the stream (``subjects: [subject]``) when it does not exist."""
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    """A message not acknowledged within this is redelivered (the consumer died)."""


class RedisSpec(_Mapped):
    """Runs from entries of a Redis stream, read through a consumer group."""

    url: str = "redis://127.0.0.1:6379/0"
    stream: str = Field(min_length=1)
    group: str | None = None
    """Consumer group, shared by every Trellis process; default ``trellis-<trigger>``."""
    claim_idle_seconds: float = Field(default=30.0, gt=0)
    """An entry pending this long with a consumer that went away is claimed and processed again."""


SPECS: Final[dict[str, type[BaseModel]]] = {
    "schedule": ScheduleSpec,
    "webhook": WebhookSpec,
    "nats": NatsSpec,
    "redis": RedisSpec,
}


def check_trigger(name: str, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a valid spec, or a ``ValidationError`` naming the offending field."""
    if not NAME_PATTERN.match(name):
        raise ValidationError(
            f"trigger name {name!r} must match {NAME_PATTERN.pattern}", details={"path": "/name"}
        )
    model = SPECS.get(kind)
    if model is None:
        raise ValidationError(
            f"unknown trigger kind {kind!r}; use one of {', '.join(KINDS)}", details={"path": "/kind"}
        )
    try:
        parsed = model.model_validate(dict(spec))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        path = "/spec/" + "/".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ValidationError(f"trigger {name!r}: {message} at {path}", details={"path": path}) from None
    return parsed.model_dump(mode="json", exclude={"name"} if kind == "schedule" else set())


def map_input(trigger: str, spec: Mapping[str, Any], bindings: Mapping[str, Any]) -> Any:
    """The run input for a payload: the spec's ``input`` expression over ``bindings``, or ``body``.

    Raises:
        ValidationError: the expression failed or did not give an object.
    """
    expression = spec.get("input")
    try:
        value = bindings.get("body") if not expression else compile_expression(expression).evaluate(bindings)
    except ExpressionError as exc:
        raise ValidationError(f"trigger {trigger!r}: its input mapping failed: {exc.message}") from exc
    if not isinstance(value, dict):
        what = "its input mapping" if expression else "the payload"
        raise ValidationError(
            f"trigger {trigger!r}: {what} gave {type(value).__name__}, not an object, as run input"
        )
    return value
