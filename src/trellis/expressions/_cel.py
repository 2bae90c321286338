"""CEL expressions behind our own small adapter (the library can be swapped here alone).

The bound library is ``common-expression-language`` (import name ``cel``, Rust bindings). It
was chosen for its modern numeric semantics (``120 > 100.0`` holds), Python exceptions on
failure and speed (research/dsl.md §7). Expressions only *read* the bindings: each evaluation
hands the library a converted copy of the values, CEL has no assignment and no unbounded loop,
and attribute probes such as ``state.__class__`` are plain missing map keys.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import cel

from trellis.errors import ExpressionError
from trellis.expressions._errors import ExpressionSyntaxError, abbreviate
from trellis.expressions._identifiers import free_identifiers

MAX_EXPRESSION_LENGTH: Final = 4096
"""Longest accepted CEL source, in characters."""

_CACHE_SIZE = 2048
_LIBRARY_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_OVERLOAD_HINT = "CEL never converts types implicitly; use int(x), double(x) or string(x) where needed"


class Expression:
    """A compiled CEL expression. Immutable and safe to share between threads and runs.

    Create with :func:`compile_expression`, which caches by source text.
    """

    __slots__ = ("_program", "root_identifiers", "source")

    source: str
    """The expression as written."""
    root_identifiers: frozenset[str]
    """Free top-level names the expression reads (``{"state", "input"}``), macro variables,
    fields and functions excluded."""
    _program: cel.Program

    def __init__(self, source: str, program: cel.Program) -> None:
        library_names = {name.lstrip(".") for name in program.variables()}
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_program", program)
        object.__setattr__(self, "root_identifiers", free_identifiers(source) & library_names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Expression is immutable; cannot set {name!r}")

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        """Evaluate over ``bindings`` and return a plain JSON-like Python value.

        Args:
            bindings: variable name -> JSON-like value (``dict``, ``list``, ``str``, ``int``,
                ``float``, ``bool``, ``None``; ``datetime``/``timedelta`` become CEL timestamps
                and durations). Never modified.

        Returns:
            ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``; a CEL timestamp comes
            back as a timezone-aware ``datetime``, a duration as seconds (``float``), bytes as
            base64 text (the protobuf JSON mapping), an optional as its value or ``None``.

        Raises:
            ExpressionError: anything went wrong (missing key or variable, no matching
                overload, division by zero, overflow, a value CEL cannot represent); the message
                names the expression and the cause.

        Example:
            >>> compile_expression("state.amount > 100.0").evaluate({"state": {"amount": 120}})
            True
        """
        context = cel.Context()
        try:
            for name, value in bindings.items():
                context.add_variable(name, value)
            result = self._program.execute(context)
        except Exception as exc:
            raise self._evaluation_error(exc) from exc
        except BaseException as exc:  # pyo3 turns a Rust panic into a BaseException subclass
            if type(exc).__name__ != "PanicException":
                raise
            raise self._evaluation_error(exc) from None
        return _to_plain(result, self.source)

    def _evaluation_error(self, exc: BaseException) -> ExpressionError:
        return ExpressionError(
            f"cannot evaluate CEL expression `{abbreviate(self.source)}`: {_describe(exc)}",
            details={"expression": self.source, "cause": type(exc).__name__},
        )

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_expression(source: str) -> Expression:
    """Compile a CEL expression once; later calls with the same source reuse the result.

    Args:
        source: CEL text, at most :data:`MAX_EXPRESSION_LENGTH` characters.

    Raises:
        ExpressionSyntaxError: the source does not parse; ``position`` is the 0-based offset.
        ExpressionError: the source is longer than the cap.

    Example:
        >>> sorted(compile_expression("state.x > 1 && has(input.y)").root_identifiers)
        ['input', 'state']
    """
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"CEL expression `{abbreviate(source, 60)}` is {len(source)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    return _compile(source)


def evaluate_map(cel_map: Mapping[str, Any], bindings: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate a ``CelMap``: string values are CEL, any other value is taken literally.

    Example:
        >>> evaluate_map({"total": "state.a + 1", "tag": None}, {"state": {"a": 1}})
        {'total': 2, 'tag': None}
    """
    return {
        key: compile_expression(value).evaluate(bindings) if isinstance(value, str) else value
        for key, value in cel_map.items()
    }


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(source: str) -> Expression:
    try:
        program = cel.compile(source)
    except Exception as exc:
        raise _syntax_error(source, str(exc)) from None
    return Expression(source, program)


def _syntax_error(source: str, library_message: str) -> ExpressionSyntaxError:
    """Turn the library's ``ERROR: <input>:LINE:COL: reason`` text into a positioned error."""
    match = _LIBRARY_ERROR.search(library_message)
    if match is None:
        return ExpressionSyntaxError(source, library_message.strip() or "does not parse")
    line, column, reason = int(match.group(1)), int(match.group(2)), match.group(3).strip()
    reason = reason.removeprefix("Syntax error: ")
    return ExpressionSyntaxError(source, reason, _offset(source, line, column))


def _offset(source: str, line: int, column: int) -> int:
    """0-based character offset of a 1-based (line, column) pair, clamped to the source."""
    lines = source.split("\n")
    before = sum(len(text) + 1 for text in lines[: max(line - 1, 0)])
    return min(before + max(column - 1, 0), len(source))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError):
        return f"no such key: {text}"
    if isinstance(exc, TypeError) and text.startswith("No such overload"):
        return f"no such overload for these operand types ({_OVERLOAD_HINT})"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, ValueError) and "Conversion Error" in text:
        return f"a bound value is not representable in CEL ({text.split(': ')[-1]})"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return first_line.split(". Check ")[0].rstrip(".:")  # drop the library's generic advice


def _to_plain(value: Any, source: str) -> Any:
    """CEL result -> JSON-like Python value (see :meth:`Expression.evaluate`)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [_to_plain(item, source) for item in value]
    if isinstance(value, dict):
        # The CEL library's maps come back in hash order, different from one evaluation to the
        # next; sorted keys keep outputs, tool arguments and request bodies stable.
        return {key: _to_plain(value[key], source) for key in sorted(value, key=str)}
    if isinstance(value, cel.OptionalValue):
        return _to_plain(value.value(), source) if value.has_value() else None
    raise ExpressionError(
        f"CEL expression `{abbreviate(source)}` produced a {type(value).__name__}, which is not a JSON value"
    )
