"""Checks on CEL fields and templates: they compile, and read only variables bound there.

Variables bound where an expression or template runs:

* everywhere: ``state`` and ``input``;
* in a node's ``output``: ``result`` too;
* in ``catch[].output`` (a node's, or ``defaults.catch``): ``error`` too;
* in every field of a *fallback node* (one that some ``catch[].next`` targets): ``error`` too
  (``null`` when the node was reached another way);
* anywhere inside a ``map`` body, nested nodes included: ``item`` and ``index`` too;
* in the workflow-level ``output``: ``state`` and ``input`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trellis.dsl._subject import Subject
from trellis.dsl.diagnostics import Code, Diagnostic, did_you_mean, error, listing
from trellis.dsl.loader import Document
from trellis.dsl.models import (
    AgentNode,
    ApprovalNode,
    FailNode,
    HttpNode,
    LlmNode,
    MapNode,
    RouterNode,
    SetNode,
    SubworkflowNode,
    ToolNode,
    WaitNode,
)
from trellis.dsl.walk import NodeRef, escape_pointer
from trellis.errors import ExpressionError
from trellis.expressions import (
    ExpressionSyntaxError,
    TemplateSyntaxError,
    compile_expression,
    compile_template,
)

_ALWAYS = frozenset({"state", "input"})
_HINTS = {
    "result": "`result` is bound only in a node's `output`",
    "error": "`error` is bound in `catch[].output` and in nodes that a `catch[].next` targets",
    "item": "`item` is bound only inside a map body",
    "index": "`index` is bound only inside a map body",
}


@dataclass(frozen=True, slots=True)
class _Field:
    pointer: str
    label: str
    """How an author names the field, e.g. ``routes[0].when``."""
    source: str
    names: frozenset[str]
    """Variables bound there."""
    template: bool


def check_expressions(subject: Subject, document: Document | None) -> Iterator[Diagnostic]:
    """``CEL_SYNTAX``, ``TEMPLATE_SYNTAX`` and ``UNKNOWN_IDENTIFIER`` for every field."""
    workflow = subject.workflow
    for item in _cel_map(workflow.output, "/output", "output", _ALWAYS):
        yield from _check(item, "the workflow", document)
    for i, handler in enumerate(workflow.defaults.catch or []):
        fields = _cel_map(
            handler.output, f"/defaults/catch/{i}/output", f"catch[{i}].output", _ALWAYS | {"error"}
        )
        for item in fields:
            yield from _check(item, "`defaults`", document)
    for ref in subject.refs:
        for item in _node_fields(subject, ref):
            yield from _check(item, f"node `{ref.id}`", document)


def _node_fields(subject: Subject, ref: NodeRef) -> Iterator[_Field]:
    node, at = ref.node, ref.pointer
    base = set(_ALWAYS)
    if subject.in_map_body(ref):
        base |= {"item", "index"}
    if subject.is_fallback(ref):
        base.add("error")
    names = frozenset(base)
    yield from _cel_map(node.output, at + "/output", "output", names | {"result"})
    for i, handler in enumerate(node.catch or []):
        yield from _cel_map(handler.output, f"{at}/catch/{i}/output", f"catch[{i}].output", names | {"error"})
    if isinstance(node, RouterNode):
        for i, route in enumerate(node.routes or []):
            yield from _cel(route.when, f"{at}/routes/{i}/when", f"routes[{i}].when", names)
    elif isinstance(node, ToolNode):
        yield from _cel_map(node.args, at + "/args", "args", names)
    elif isinstance(node, AgentNode | SubworkflowNode):
        yield from _cel_map(node.input, at + "/input", "input", names)
    elif isinstance(node, SetNode):
        yield from _cel_map(node.values, at + "/values", "values", names)
    elif isinstance(node, MapNode):
        yield from _cel(node.items, at + "/items", "items", names)
    elif isinstance(node, WaitNode):
        yield from _cel(node.until, at + "/until", "until", names)
    elif isinstance(node, LlmNode):
        yield from _template(node.prompt, at + "/prompt", "prompt", names)
        yield from _template(node.system, at + "/system", "system", names)
    elif isinstance(node, HttpNode):
        yield from _template(node.url, at + "/url", "url", names)
        yield from _template_leaves(node.headers, at + "/headers", "headers", names)
        yield from _template_leaves(node.query, at + "/query", "query", names)
        yield from _template_leaves(node.body, at + "/body", "body", names)
    elif isinstance(node, ApprovalNode):
        yield from _template(node.title, at + "/title", "title", names)
    elif isinstance(node, FailNode):
        yield from _template(node.message, at + "/message", "message", names)


def _cel(source: object, pointer: str, label: str, names: frozenset[str]) -> Iterator[_Field]:
    if isinstance(source, str):
        yield _Field(pointer, label, source, names, template=False)


def _cel_map(
    mapping: Mapping[str, Any] | None, pointer: str, label: str, names: frozenset[str]
) -> Iterator[_Field]:
    for key, value in (mapping or {}).items():
        yield from _cel(value, f"{pointer}/{escape_pointer(key)}", f"{label}.{key}", names)


def _template(source: object, pointer: str, label: str, names: frozenset[str]) -> Iterator[_Field]:
    if isinstance(source, str):
        yield _Field(pointer, label, source, names, template=True)


def _template_leaves(value: Any, pointer: str, label: str, names: frozenset[str]) -> Iterator[_Field]:
    if isinstance(value, str):
        yield from _template(value, pointer, label, names)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _template_leaves(
                item, f"{pointer}/{escape_pointer(str(key))}", f"{label}.{key}", names
            )
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _template_leaves(item, f"{pointer}/{i}", f"{label}[{i}]", names)


def _check(item: _Field, owner: str, document: Document | None) -> Iterator[Diagnostic]:
    where = f"`{item.label}` of {owner}"
    try:
        compiled = compile_template(item.source) if item.template else compile_expression(item.source)
    except ExpressionSyntaxError as exc:
        yield _at(
            error(Code.CEL_SYNTAX, item.pointer, f"{where}: {exc.message}"), document, item, exc.position
        )
        return
    except TemplateSyntaxError as exc:
        offset = _line_offset(item.source, exc.line)
        yield _at(
            error(Code.TEMPLATE_SYNTAX, item.pointer, f"{where}: {exc.message}"), document, item, offset
        )
        return
    except ExpressionError as exc:  # too long
        code = Code.TEMPLATE_SYNTAX if item.template else Code.CEL_SYNTAX
        yield error(code, item.pointer, f"{where}: {exc.message}")
        return
    kind = "templates" if item.template else "expressions"
    for name in sorted(compiled.root_identifiers - item.names):
        hint = f" ({_HINTS[name]})" if name in _HINTS else ""
        yield error(
            Code.UNKNOWN_IDENTIFIER,
            item.pointer,
            f"`{name}` is not defined in {where}{did_you_mean(name, item.names)}{hint}; "
            f"{kind} there can read: {listing(item.names)}",
        )


def _at(diagnostic: Diagnostic, document: Document | None, item: _Field, offset: int | None) -> Diagnostic:
    """``diagnostic`` positioned at character ``offset`` of the field, when that can be known."""
    if document is None:
        return diagnostic
    where = document.position(item.pointer) if offset is None else document.locate(item.pointer, offset)
    if where is None:
        return diagnostic
    return Diagnostic(
        diagnostic.code, diagnostic.severity, diagnostic.path, diagnostic.message, where[0], where[1]
    )


def _line_offset(source: str, line: int | None) -> int | None:
    """Offset of the first character of 1-based ``line`` in ``source``."""
    if line is None:
        return None
    offset = 0
    for _ in range(line - 1):
        newline = source.find("\n", offset)
        if newline < 0:
            return None
        offset = newline + 1
    return offset
