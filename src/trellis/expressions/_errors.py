"""Compile-time errors of expressions and templates; both are :class:`ExpressionError`.

Evaluation and rendering failures raise plain :class:`~trellis.errors.ExpressionError`; the two
subclasses here add *where* in the source the problem is, so the definition validator can point
an author at the right character of the right YAML line.
"""

from __future__ import annotations

from trellis.errors import ExpressionError

_ABBREVIATE_AT = 120


def abbreviate(source: str, limit: int = _ABBREVIATE_AT) -> str:
    """``source`` on one line, cut to ``limit`` characters, for quoting in messages."""
    flat = " ".join(source.split()) if "\n" in source else source
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ExpressionSyntaxError(ExpressionError):
    """A CEL expression does not parse.

    Attributes:
        source: the expression as written.
        position: 0-based character offset of the problem in ``source``, when known.
        reason: what is wrong, without the expression (e.g. ``mismatched input '<EOF>'``).
    """

    def __init__(self, source: str, reason: str, position: int | None = None) -> None:
        where = f" at character {position}" if position is not None else ""
        super().__init__(
            f"invalid CEL expression `{abbreviate(source)}`{where}: {reason}",
            details={"expression": source, "position": position},
        )
        self.source = source
        self.reason = reason
        self.position = position


class TemplateSyntaxError(ExpressionError):
    """A Jinja2 template does not parse.

    Attributes:
        source: the template as written.
        line: 1-based line of the problem inside the template, when known.
        reason: what is wrong (Jinja's own message).
    """

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        where = f" on line {line}" if line is not None else ""
        super().__init__(
            f"invalid template `{abbreviate(source)}`{where}: {reason}",
            details={"template": source, "line": line},
        )
        self.source = source
        self.reason = reason
        self.line = line
