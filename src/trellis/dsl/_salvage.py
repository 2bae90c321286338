"""Build a best-effort :class:`Workflow` from data that failed validation.

The semantic checks walk a ``Workflow`` (with :func:`trellis.dsl.walk.walk`, so ids and scopes
agree with the compiler). When pydantic rejects the document, one bad field must not hide every
other problem, so this module keeps everything that *is* valid:

* a model whose data is invalid is rebuilt field by field (``model_construct``): each field
  that validates on its own is kept, a missing or invalid required field becomes ``None``
  (an empty ``{}``/``[]`` for containers such as ``nodes``, ``branches`` and ``do``);
* mappings keep their valid entries; lists keep every position (an invalid element becomes an
  empty model, or a placeholder node) so JSON pointers built from indexes stay right;
* a node with an unknown type becomes a placeholder ``ToolNode`` carrying only the common
  fields (``next``, ``catch``, ``output`` ...), so edges through it still count.

The result is for analysis only — it may hold ``None`` where the model says ``str``.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from trellis.dsl.models import AnyNode, ToolNode, Workflow

_INVALID = object()
_NODE_MODELS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(AnyNode)
}
_COMMON_FIELDS = frozenset({"id", "description", "next", "output", "retry", "timeout", "catch"})


def salvage_workflow(data: Mapping[str, Any]) -> Workflow:
    """A ``Workflow`` holding every part of ``data`` that validates on its own."""
    workflow = _salvage_model(Workflow, data)
    assert isinstance(workflow, Workflow)
    return workflow


def salvage_node(raw: Any) -> AnyNode:
    """The node ``raw`` describes, as far as it is valid; a placeholder when its type is unknown."""
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    model = _NODE_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        common = {k: v for k, v in raw.items() if k in _COMMON_FIELDS} if isinstance(raw, Mapping) else {}
        node = _salvage_model(ToolNode, {"type": "tool", **common})
    else:
        node = _salvage_model(model, raw)
    assert isinstance(node, BaseModel)
    return node  # type: ignore[return-value]  # one of the node models by construction


def _salvage_model(model: type[BaseModel], raw: Mapping[str, Any]) -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError:
        pass
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in raw:
            annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            value = _salvage(annotation, raw[key])
            if value is not _INVALID:
                fields[name] = value
                continue
        if info.is_required():
            fields[name] = _empty(info.annotation)
    return model.model_construct(**fields)


def _empty(annotation: Any) -> Any:
    """Stand-in for a missing required field: an empty container, else ``None``."""
    origin = get_origin(annotation)
    return {} if origin is dict else [] if origin is list else None


def _salvage(annotation: Any, raw: Any) -> Any:
    """``raw`` validated as ``annotation``, else its valid parts, else ``_INVALID``."""
    try:
        return _adapter(annotation).validate_python(raw)
    except ValidationError:
        pass
    except TypeError:  # an annotation TypeAdapter cannot take on its own: salvage below
        pass
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _salvage_model(annotation, raw) if isinstance(raw, Mapping) else _INVALID
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if any(
            isinstance(m, type) and issubclass(m, BaseModel) and m in _NODE_MODELS.values() for m in members
        ):
            return salvage_node(raw)
        for member in members:
            value = _salvage(member, raw)
            if value is not _INVALID:
                return value
        return _INVALID
    if origin is dict and isinstance(raw, Mapping):
        value_type = get_args(annotation)[1]
        kept = {str(k): _salvage(value_type, v) for k, v in raw.items()}
        return {k: v for k, v in kept.items() if v is not _INVALID}
    if origin is list and isinstance(raw, list):
        item_type = get_args(annotation)[0]
        items = [_salvage(item_type, item) for item in raw]
        return [_placeholder(item_type) if item is _INVALID else item for item in items]
    return _INVALID


def _placeholder(item_type: Any) -> Any:
    """What stands in for an invalid list element, so later indexes keep their meaning."""
    while get_origin(item_type) is Annotated:
        item_type = get_args(item_type)[0]
    if isinstance(item_type, type) and issubclass(item_type, BaseModel):
        return _salvage_model(item_type, {})
    if get_origin(item_type) in (Union, types.UnionType):
        return salvage_node(None)
    return None


@functools.lru_cache(maxsize=256)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)
