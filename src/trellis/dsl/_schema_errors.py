"""Turn pydantic validation errors into ``SCHEMA`` diagnostics with document pointers.

Pydantic locations mix document keys with labels of its own: the tag of a discriminated union
(``('nodes', 'a', 'tool', 'args')``) and the member name of a plain union
(``('retry', 'RetrySpec', 'max_attempts')``, ``('retry', 'str')``). The location is walked
together with the model annotations, so each label is recognised for what it is and dropped
from the pointer. When every member of a plain union rejects a value, the members' complaints
are merged into one diagnostic; when one member got further into the value, only its errors
are kept (the others merely say "not a string").
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trellis.dsl.diagnostics import Code, Diagnostic, did_you_mean, error, listing
from trellis.dsl.models import NODE_TYPES, Workflow
from trellis.dsl.walk import escape_pointer

_TYPE_WORDS = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "string_type": "a string",
    "list_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
}
_BOUNDS = {
    "greater_than_equal": "at least",
    "greater_than": "greater than",
    "less_than_equal": "at most",
    "less_than": "less than",
}


@dataclass(frozen=True, slots=True)
class _Located:
    pointer: str
    union_site: str | None
    """Pointer of the plain union whose member label this location went through, if any."""
    model: type[BaseModel] | None
    """Model owning the last location element, when known (for field suggestions)."""
    node_slot: bool = False
    """The location is where a node goes (a value of ``nodes``, an item of a branch or body)."""
    key: bool = False
    """The error is about a mapping key, not its value."""


def schema_diagnostics(exc: ValidationError, data: Any) -> list[Diagnostic]:
    """One ``SCHEMA`` diagnostic per structural problem, pointing into ``data``."""
    found: list[tuple[_Located, dict[str, Any]]] = [
        (_locate(err["loc"]), dict(err)) for err in exc.errors(include_url=False)
    ]
    deeper = {
        located.union_site
        for located, _ in found
        if located.union_site is not None and located.pointer != located.union_site
    }
    diagnostics: list[Diagnostic] = []
    merged: dict[str, list[dict[str, Any]]] = {}
    for located, err in found:
        site = located.union_site
        if site is not None and located.pointer == site:
            if site not in deeper:
                merged.setdefault(site, []).append(err)
            continue
        pointer = located.pointer
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            pointer += "/type"
        diagnostics.append(error(Code.SCHEMA, pointer, _message(err, located)))
    for site, errs in merged.items():
        wanted = sorted({_TYPE_WORDS.get(e["type"], e["msg"]) for e in errs})
        diagnostics.append(
            error(Code.SCHEMA, site, f"`{_field(site)}` must be {' or '.join(wanted)}, got {_show(errs[0])}")
        )
    return diagnostics


def _locate(loc: Sequence[int | str]) -> _Located:
    tokens: list[str] = []
    union_site: str | None = None
    annotation: Any = Workflow
    owner: type[BaseModel] | None = None
    i = 0
    while i < len(loc):
        part = loc[i]
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            members = [m for m in get_args(annotation) if m is not type(None)]
            if len(members) == 1:  # ``X | None``: pydantic adds no label
                annotation = members[0]
                continue
            chosen = _member(members, part)
            if chosen is None:
                break
            if not _is_node(chosen):
                union_site = "".join(tokens)
            annotation, i = chosen, i + 1
            continue
        tokens.append("/" + escape_pointer(str(part)))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            info = _field_info(annotation, str(part))
            annotation = info.annotation if info is not None else None
        elif origin is dict:
            annotation = get_args(annotation)[1]
            if i + 1 < len(loc) and loc[i + 1] == "[key]":
                i += 1  # the key itself is wrong; point at the entry
        elif origin is list:
            annotation = get_args(annotation)[0]
        else:
            annotation = None
        i += 1
    # Anything left is beyond what the annotations describe: keep it verbatim.
    tokens.extend("/" + escape_pointer(str(p)) for p in loc[i:] if p != "[key]")
    final = _unwrap(annotation)
    node_slot = get_origin(final) in (Union, types.UnionType) and all(_is_node(m) for m in get_args(final))
    return _Located("".join(tokens), union_site, owner, node_slot, "[key]" in loc)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _member(members: Sequence[Any], label: int | str) -> Any:
    for member in members:
        if _is_node(member) and _node_type(member) == label:
            return member
        if getattr(get_origin(member) or member, "__name__", None) == label:
            return member
    return None


def _is_node(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, BaseModel) and _node_type(member) is not None


def _node_type(model: type[BaseModel]) -> str | None:
    info = model.model_fields.get("type")
    if info is None:
        return None
    args = get_args(info.annotation)
    return args[0] if len(args) == 1 and args[0] in NODE_TYPES else None


def _field_info(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _field(pointer: str) -> str:
    return pointer.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~") or "/"


def _show(err: dict[str, Any]) -> str:
    value = err.get("input")
    text = repr(value)
    kind = type(value).__name__
    return f"{kind} {text if len(text) <= 60 else text[:59] + '…'}"


def _message(err: dict[str, Any], located: _Located) -> str:
    kind, field = err["type"], _field(located.pointer)
    ctx = err.get("ctx") or {}
    if located.key:
        return f"key {err.get('input')!r} must be a string"
    if kind == "missing":
        where = (
            f" in this {_node_type(located.model)} node"
            if located.model and _node_type(located.model)
            else ""
        )
        return f"missing required field `{field}`{where}"
    if kind == "extra_forbidden":
        return f"unknown field `{field}`{_suggest_field(field, located.model)}"
    if kind == "union_tag_invalid":
        return f"unknown node type `{ctx.get('tag')}`; node types are: {', '.join(NODE_TYPES)}"
    if kind == "union_tag_not_found":
        return f"this node has no `type`; node types are: {', '.join(NODE_TYPES)}"
    if located.node_slot:
        return f"a node must be a mapping with a `type`, got {_show(err)}"
    if kind in _BOUNDS:
        return f"`{field}` must be {_BOUNDS[kind]} {next(iter(ctx.values()), '?')}, got {_show(err)}"
    if kind == "literal_error":
        return f"`{field}: {err.get('input')!r}` is not allowed; expected {ctx.get('expected')}"
    if kind == "value_error":
        return f"`{field}`: {str(err['msg']).removeprefix('Value error, ')}"
    if kind in _TYPE_WORDS:
        return f"`{field}` must be {_TYPE_WORDS[kind]}, got {_show(err)}"
    text = str(err["msg"])
    return f"`{field}`: {text[:1].lower()}{text[1:]}, got {_show(err)}"


def _suggest_field(field: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    names = [info.alias or name for name, info in model.model_fields.items()]
    return f"{did_you_mean(field, names)} (allowed: {listing(names, limit=20)})"
