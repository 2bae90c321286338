"""Diagnostics: every problem found in a definition, with a stable code and where it is.

Codes are the contract (tools and tests match on them); messages may be reworded. A path is a
JSON pointer (RFC 6901) into the *document* as written, ``""`` for the whole document.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trellis.dsl.models import Workflow

Severity = Literal["error", "warning"]


class Code(StrEnum):
    """Stable diagnostic codes. All are errors except ``APPROVAL_WITHOUT_TIMEOUT``."""

    PARSE_ERROR = "PARSE_ERROR"
    """The text is not valid YAML (or JSON, for ``.json`` files)."""
    DUPLICATE_KEY = "DUPLICATE_KEY"
    """A mapping repeats a key (YAML parsers would silently keep the last one)."""
    SCHEMA = "SCHEMA"
    """Structure: a missing or unknown field, a wrong type, an unknown node type."""
    UNKNOWN_TARGET = "UNKNOWN_TARGET"
    """``start``, ``next``, a route, ``default``, ``catch.next`` or ``timeout.next`` names no node."""
    CATCH_LEAVES_SCOPE = "CATCH_LEAVES_SCOPE"
    """A target names a node that exists, but in another scope (another branch or body, or
    the top level from inside one, or an inline node from the top level)."""
    UNREACHABLE_NODE = "UNREACHABLE_NODE"
    """Nothing leads to the node from ``start`` (or from the first node of its list)."""
    ROUTER_WITHOUT_DEFAULT = "ROUTER_WITHOUT_DEFAULT"
    """A router has no ``default`` for when no route matches."""
    DUPLICATE_ID = "DUPLICATE_ID"
    """Two nodes share an id (one flat namespace, inline nodes included)."""
    MALFORMED_ID = "MALFORMED_ID"
    """A node id or branch name does not match ``^[a-z][a-z0-9_]*$``."""
    CEL_SYNTAX = "CEL_SYNTAX"
    """A CEL field does not compile."""
    TEMPLATE_SYNTAX = "TEMPLATE_SYNTAX"
    """A template field does not compile."""
    UNKNOWN_IDENTIFIER = "UNKNOWN_IDENTIFIER"
    """An expression or template reads a variable that is not bound where it runs."""
    CYCLE_WITHOUT_EXIT = "CYCLE_WITHOUT_EXIT"
    """A loop from which no path leads to an end: the run could never finish."""
    MAX_ATTEMPTS_BELOW_ONE = "MAX_ATTEMPTS_BELOW_ONE"
    """``retry.max_attempts`` is below 1 (it counts attempts, the first one included)."""
    UNKNOWN_POLICY = "UNKNOWN_POLICY"
    """``retry: name`` or ``timeout: name`` names no entry of ``policies``."""
    APPROVAL_WITHOUT_TIMEOUT = "APPROVAL_WITHOUT_TIMEOUT"
    """Warning: an approval waits forever when nobody decides."""
    UNKNOWN_STATE_FIELD = "UNKNOWN_STATE_FIELD"
    """A node writes a key that is not a declared state field (only when ``state`` is declared)."""
    INVALID_JSON_SCHEMA = "INVALID_JSON_SCHEMA"
    """``input``, an approval's ``form`` or an llm node's ``output_schema`` is not a valid JSON Schema."""
    UNPINNED_WORKFLOW = "UNPINNED_WORKFLOW"
    """A ``subworkflow`` node names a workflow without ``@version``."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a definition.

    ``format()`` renders ``file:line:col path code message``; an unknown position is shown as
    ``0:0`` and the root path ``""`` as ``/``.
    """

    code: str
    """Stable identifier of the kind of problem (see :class:`Code`)."""
    severity: Severity
    """``error`` makes the definition invalid; ``warning`` does not."""
    path: str
    """JSON pointer into the document (``/nodes/route/default``); ``""`` is the root."""
    message: str
    """What is wrong, naming the offending value and, where useful, the valid choices."""
    line: int | None = None
    """1-based line in the source text, when known."""
    col: int | None = None
    """1-based column in the source text, when known."""

    @property
    def is_error(self) -> bool:
        """True for errors, false for warnings."""
        return self.severity == "error"

    def format(self, filename: str = "<input>") -> str:
        """``file:line:col path code message`` — one line, for terminals and editors."""
        return f"{filename}:{self.line or 0}:{self.col or 0} {self.path or '/'} {self.code} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the shape used in ``DefinitionError`` details and ``--json``)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "col": self.col,
        }


def error(code: Code, path: str, message: str) -> Diagnostic:
    """An error diagnostic without a position (the validator fills it in)."""
    return Diagnostic(code.value, "error", path, message)


def warning(code: Code, path: str, message: str) -> Diagnostic:
    """A warning diagnostic without a position (the validator fills it in)."""
    return Diagnostic(code.value, "warning", path, message)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` when a choice is close to ``value``, else ``""``."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def listing(choices: Iterable[str], limit: int = 12) -> str:
    """``a, b, c`` (sorted, cut after ``limit``), or ``(none)``."""
    names = sorted(set(choices))
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names) - limit} more)"


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, int, str, str]:
    """Order by source position (unknown positions last), then path and code."""
    known = 0 if diagnostic.line is not None else 1
    return (known, diagnostic.line or 0, diagnostic.col or 0, diagnostic.path, diagnostic.code)


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of validating one definition."""

    diagnostics: tuple[Diagnostic, ...]
    """Every problem found, sorted by position, then path."""
    workflow: Workflow | None = None
    """The validated definition; set only when there is no error (warnings are allowed)."""
    filename: str = "<input>"
    """Where the definition came from, for :meth:`format`."""
    _errors: tuple[Diagnostic, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_errors", tuple(d for d in self.diagnostics if d.is_error))

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self._errors

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        """The diagnostics with severity ``error``."""
        return self._errors

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """The diagnostics with severity ``warning``."""
        return tuple(d for d in self.diagnostics if not d.is_error)

    def format(self) -> str:
        """Every diagnostic on its own line (see :meth:`Diagnostic.format`)."""
        return "\n".join(d.format(self.filename) for d in self.diagnostics)
