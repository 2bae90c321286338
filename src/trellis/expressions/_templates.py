"""Jinja2 templates for text fields (prompts, URLs, headers, bodies, titles, messages).

Templates render in an ``ImmutableSandboxedEnvironment`` (jinja2 >= 3.1.6, which fixed the
known sandbox escapes): no attribute starting with ``_``, no method that mutates a list or
dict, no unsafe ``str.format``. ``StrictUndefined`` makes a missing variable or key an error
instead of an empty string. A template produces text only; its output is never evaluated again.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping
from typing import Any, Final

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trellis.errors import ExpressionError
from trellis.expressions._errors import TemplateSyntaxError, abbreviate

MAX_TEMPLATE_LENGTH: Final = 65536
"""Longest accepted template source, in characters."""

_CACHE_SIZE = 1024


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def tojson(value: Any, indent: int | None = None) -> str:
    """The ``tojson`` filter: ``value`` as JSON text (not HTML-escaped, unlike Jinja's own)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["tojson"] = tojson
    return env


_ENV: Final = _environment()


class Template:
    """A compiled Jinja2 template. Immutable; create with :func:`compile_template` (cached)."""

    __slots__ = ("_template", "root_identifiers", "source")

    source: str
    """The template as written."""
    root_identifiers: frozenset[str]
    """Variables the template reads from its bindings (``{"state"}`` for ``{{ state.x }}``)."""
    _template: jinja2.Template

    def __init__(self, source: str, template: jinja2.Template, root_identifiers: frozenset[str]) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_template", template)
        object.__setattr__(self, "root_identifiers", root_identifiers)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Template is immutable; cannot set {name!r}")

    def render(self, bindings: Mapping[str, Any]) -> str:
        """Render with ``bindings`` as the template's variables.

        Raises:
            ExpressionError: a variable or key is missing, the sandbox refused an operation
                (``SecurityError``), or a filter or operator failed; the message names the
                template and the cause.

        Example:
            >>> compile_template("Hi {{ state.name }}").render({"state": {"name": "Ada"}})
            'Hi Ada'
        """
        try:
            return self._template.render(dict(bindings))
        except Exception as exc:
            raise ExpressionError(
                f"cannot render template `{abbreviate(self.source)}`: {type(exc).__name__}: {exc}",
                details={"template": self.source, "cause": type(exc).__name__},
            ) from exc

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(source: str) -> Template:
    """Compile a Jinja2 template once; later calls with the same source reuse it.

    Raises:
        TemplateSyntaxError: the template does not parse; ``line`` is 1-based.
        ExpressionError: the source is longer than :data:`MAX_TEMPLATE_LENGTH`.
    """
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise ExpressionError(
            f"template `{abbreviate(source, 60)}` is {len(source)} characters long; "
            f"the limit is {MAX_TEMPLATE_LENGTH}"
        )
    return _compile(source)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(source: str) -> Template:
    try:
        tree = _ENV.parse(source)
        compiled = _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(source, exc.message or str(exc), exc.lineno) from None
    return Template(source, compiled, frozenset(meta.find_undeclared_variables(tree)))


def render_value(value: Any, bindings: Mapping[str, Any], *, native: bool = False) -> Any:
    """Render every string leaf of a JSON structure as a template; other leaves are kept.

    Mapping keys are not rendered. Used for HTTP bodies, headers and query parameters. With
    ``native``, a leaf that is exactly one ``{{ expression }}`` keeps the expression's type
    (a number stays a number in a JSON body) instead of becoming its text.

    Example:
        >>> render_value({"id": "{{ state.id }}", "n": 1}, {"state": {"id": "t-1"}})
        {'id': 't-1', 'n': 1}
        >>> render_value({"amount": "{{ state.amount }}"}, {"state": {"amount": 120}}, native=True)
        {'amount': 120}
    """
    if isinstance(value, str):
        if native and (expression := _single_expression(value)) is not None:
            return _evaluate_native(expression, bindings)
        return compile_template(value).render(bindings)
    if isinstance(value, Mapping):
        return {key: render_value(item, bindings, native=native) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, bindings, native=native) for item in value]
    return value


def _single_expression(text: str) -> str | None:
    """The inside of ``{{ ... }}`` when that is the whole string (and holds no other tag)."""
    if not (text.startswith("{{") and text.endswith("}}")):
        return None
    inner = text[2:-2]
    if "{{" in inner or "}}" in inner or "{%" in inner or "{#" in inner:
        return None
    return inner.strip() or None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _native_expression(expression: str) -> Any:
    try:
        return _ENV.compile_expression(expression, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError("{{ " + expression + " }}", exc.message or str(exc), exc.lineno) from None


def _evaluate_native(expression: str, bindings: Mapping[str, Any]) -> Any:
    try:
        value = _native_expression(expression)(**bindings)
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises the UndefinedError naming what is missing
    except ExpressionError:
        raise
    except Exception as exc:
        raise ExpressionError(
            f"cannot evaluate `{{{{ {abbreviate(expression)} }}}}`: {type(exc).__name__}: {exc}",
            details={"template": expression, "cause": type(exc).__name__},
        ) from exc
    return value


def template_root_identifiers(value: Any) -> frozenset[str]:
    """Variables read by the templates among the string leaves of a JSON structure.

    Raises:
        TemplateSyntaxError: a string leaf does not parse.
    """
    if isinstance(value, str):
        return compile_template(value).root_identifiers
    if isinstance(value, Mapping):
        items: list[Any] = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return frozenset()
    names: frozenset[str] = frozenset()
    for item in items:
        names |= template_root_identifiers(item)
    return names
