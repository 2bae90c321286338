"""Expressions and templates used by workflow definitions.

* CEL (:func:`compile_expression`, :func:`evaluate_map`) for conditions and data mappings:
  non-Turing-complete, side-effect free, evaluated over bound variables (``state``, ``input``,
  ``result``, ``item``, ``index``, ``error``) — never built by string concatenation.
* Jinja2 in a sandbox (:func:`compile_template`, :func:`render_value`) for text: prompts,
  URLs, headers, bodies, titles, messages.

Both compile once (cached by source) and raise :class:`~trellis.errors.ExpressionError` (never
retried) when they fail; compile errors carry the position of the problem.
"""

from trellis.expressions._cel import (
    MAX_EXPRESSION_LENGTH,
    Expression,
    compile_expression,
    evaluate_map,
)
from trellis.expressions._errors import ExpressionSyntaxError, TemplateSyntaxError
from trellis.expressions._identifiers import free_identifiers
from trellis.expressions._templates import (
    MAX_TEMPLATE_LENGTH,
    Template,
    compile_template,
    render_value,
    template_root_identifiers,
    tojson,
)

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_TEMPLATE_LENGTH",
    "Expression",
    "ExpressionSyntaxError",
    "Template",
    "TemplateSyntaxError",
    "compile_expression",
    "compile_template",
    "evaluate_map",
    "free_identifiers",
    "render_value",
    "template_root_identifiers",
    "tojson",
]
