"""Errors raised by Trellis, each with a stable code and a way to render it as problem details.

Two families live here:

* :class:`WorkflowError` and its subclasses are *failures*: something went wrong and a caller
  can react to it (retry, route to a fallback with ``catch``, show it to a user). Every one
  carries an error ``name`` that workflow definitions match on (``catch: [{errors: [Timeout]}]``)
  and converts to an RFC 9457 problem document with :meth:`WorkflowError.to_problem`.
* Control-flow signals (cancellation) derive from :class:`BaseException`, never from
  :class:`Exception`, so a broad ``except Exception`` in node code cannot swallow them.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://trellis.dev/problems/"
"""Base of the ``type`` URI of every problem document; ``type`` = base + error name."""

#: Error names that are never retried, whatever a retry policy's ``on`` list says.
NON_RETRYABLE = frozenset(
    {
        "ValidationError",
        "ExpressionError",
        "CircuitOpen",
        "ApprovalRejected",
        "Cancelled",
        "AgentUnavailable",
        "PreflightFailed",
    }
)

#: Error names retried when a retry policy does not list ``on`` explicitly.
TRANSIENT = frozenset({"Timeout", "ConnectionError", "RateLimited", "HttpError"})


class WorkflowError(Exception):
    """Base of every failure a workflow can observe, match in ``catch`` and retry.

    Args:
        message: what went wrong, naming the identifiers involved (node, URL, value).
        node: id of the node the error belongs to, when known.
        details: extra JSON-serialisable facts for the problem document.
        retryable: overrides the name-based classification (e.g. an HTTP 404 is an
            ``HttpError`` that is *not* worth retrying).
        retry_after: seconds the remote side asked us to wait (``Retry-After``).
    """

    name: str = "Error"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.details = dict(details or {})
        self._retryable = retryable
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether a retry could plausibly succeed."""
        if self._retryable is not None:
            return self._retryable
        return self.name not in NON_RETRYABLE

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """Render as an RFC 9457 problem document (JSON-serialisable)."""
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + self.name,
            "title": self.name,
            "status": self.status,
            "detail": self.message,
            "error": self.name,
        }
        if instance is not None:
            problem["instance"] = instance
        elif self.node is not None:
            problem["instance"] = f"/nodes/{self.node}"
        if self.node is not None:
            problem["node"] = self.node
        if self.details:
            problem["details"] = self.details
        return problem

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, node={self.node!r}, message={self.message!r})"


class NamedError(WorkflowError):
    """A failure with an arbitrary, author-chosen name (``fail`` nodes, tool errors)."""

    def __init__(self, name: str, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.name = name


class TimeoutExceeded(WorkflowError):
    """A node attempt exceeded its ``timeout.run`` or ``timeout.idle``."""

    name = "Timeout"
    status = 504


class ConnectionFailed(WorkflowError):
    """The remote side could not be reached (refused, reset, DNS, TLS)."""

    name = "ConnectionError"
    status = 502


class HttpError(WorkflowError):
    """A remote answered with an error status; 5xx are retryable, other 4xx are not."""

    name = "HttpError"
    status = 502


class RateLimited(WorkflowError):
    """A remote answered 429 (or 503 with ``Retry-After``)."""

    name = "RateLimited"
    status = 429


class ToolError(WorkflowError):
    """A registered Python tool raised."""

    name = "ToolError"


class LlmError(WorkflowError):
    """A chat-completions call failed or answered with something unusable."""

    name = "LlmError"
    status = 502


class ValidationError(WorkflowError):
    """Data did not match its schema (run input, a response, an approval form)."""

    name = "ValidationError"
    status = 422


class ExpressionError(WorkflowError):
    """A CEL expression or Jinja template failed to compile or evaluate. Never retried."""

    name = "ExpressionError"
    status = 422


class ApprovalRejected(WorkflowError):
    """A human rejected an approval gate."""

    name = "ApprovalRejected"
    status = 409


class CircuitOpen(WorkflowError):
    """A call was refused because the target's circuit breaker is open."""

    name = "CircuitOpen"
    status = 503


class AgentUnavailable(WorkflowError):
    """An agent cannot be called: it is disabled, or its credentials cannot be read."""

    name = "AgentUnavailable"
    status = 503


class PreflightFailed(WorkflowError):
    """A run's ``preflight`` agents are not all registered, enabled, healthy and closed-circuit."""

    name = "PreflightFailed"
    status = 503


class DefinitionError(WorkflowError):
    """A workflow definition is invalid; ``details['diagnostics']`` lists every problem."""

    name = "DefinitionError"
    status = 422


class NotFound(WorkflowError):
    """A workflow, version, run, tool or model alias does not exist."""

    name = "NotFound"
    status = 404


class Conflict(WorkflowError):
    """The request conflicts with the current state (e.g. approving a run that is not waiting)."""

    name = "Conflict"
    status = 409


class RunCancelled(BaseException):
    """Signal: the run was cancelled. Not an ``Exception``, so node code cannot swallow it."""


def error_name(exc: BaseException) -> str:
    """The name ``catch`` and ``retry.on`` match for ``exc``."""
    if isinstance(exc, WorkflowError):
        return exc.name
    return type(exc).__name__


def as_workflow_error(exc: BaseException, *, node: str | None = None) -> WorkflowError:
    """Wrap any exception as a :class:`WorkflowError`, keeping the original as ``__cause__``."""
    if isinstance(exc, WorkflowError):
        if node is not None and exc.node is None:
            exc.node = node
        return exc
    wrapped = NamedError(type(exc).__name__, str(exc) or type(exc).__name__, node=node)
    wrapped.__cause__ = exc
    return wrapped
