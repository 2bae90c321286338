"""The LangGraph state type of a definition: declared fields, their reducers, private channels.

Public fields come from ``state`` plus every key a node writes (``output``, ``catch.output``,
``set.values``, ``map.collect``) and the input schema's properties, so a definition without a
``state`` block still gets a channel per field it uses. Private channels (``__`` prefix) carry
what the compiler needs between its own nodes; expressions never see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypedDict, cast

from trellis.dsl.models import MapNode, SetNode, Workflow
from trellis.dsl.walk import walk
from trellis.nodes._channels import ERROR_KEY, FAILURES_KEY, INDEX_KEY, ITEM_KEY, MAP_KEY, RESET, RESULT_KEY


def append_reducer(current: Any, update: Any) -> list[Any]:
    """``reducer: append`` — lists concatenate; a single value is appended."""
    base = list(current) if isinstance(current, list) else ([] if current is None else [current])
    if isinstance(update, list):
        return base + update
    return [*base, update] if update is not None else base


def merge_reducer(current: Any, update: Any) -> Any:
    """``reducer: merge`` — objects merge key by key (shallow); anything else replaces."""
    if isinstance(current, dict) and isinstance(update, dict):
        return {**current, **update}
    return update


def nested_merge(current: Any, update: Any) -> dict[str, Any]:
    """Two-level merge with reset, so concurrent branches/items can each add their entry."""
    merged: dict[str, Any] = dict(current or {})
    for owner, entries in (update or {}).items():
        if entries == RESET:
            merged[owner] = {}
        else:
            merged[owner] = {**merged.get(owner, {}), **entries}
    return merged


REDUCERS = {"append": append_reducer, "merge": merge_reducer}
"""The functions of the named reducers; a field with any other reducer keeps the last value."""


def written_fields(workflow: Workflow) -> set[str]:
    """Every state key some node or catch handler writes."""
    keys: set[str] = set()
    for ref in walk(workflow):
        node = ref.node
        keys.update((node.output or {}).keys())
        for catch in node.catch or []:
            keys.update((catch.output or {}).keys())
        if isinstance(node, SetNode):
            keys.update(node.values)
        if isinstance(node, MapNode) and node.collect:
            keys.add(node.collect)
    for catch in workflow.defaults.catch or []:
        keys.update((catch.output or {}).keys())
    return keys


def field_reducers(workflow: Workflow) -> dict[str, str]:
    """``field -> reducer`` for every public field of the state."""
    fields: dict[str, str] = {name: spec.reducer for name, spec in workflow.state.items()}
    extra: Iterable[str] = written_fields(workflow)
    if workflow.input and isinstance(workflow.input.get("properties"), dict):
        extra = [*extra, *workflow.input["properties"]]
    for name in extra:
        fields.setdefault(name, "replace")
    return fields


def state_type(name: str, reducers: Mapping[str, str]) -> type[Any]:
    """A ``TypedDict`` LangGraph turns into channels, one per field, with the right reducers."""
    annotations: dict[str, Any] = {}
    for field_name, reducer in reducers.items():
        fn = REDUCERS.get(reducer)
        annotations[field_name] = Annotated[Any, fn] if fn else Any
    annotations[FAILURES_KEY] = Annotated[dict[str, Any], nested_merge]
    annotations[MAP_KEY] = Annotated[dict[str, Any], nested_merge]
    annotations[RESULT_KEY] = Any
    annotations[ERROR_KEY] = Any
    annotations[ITEM_KEY] = Any
    annotations[INDEX_KEY] = Any
    return cast("type[Any]", TypedDict(name, annotations, total=False))  # type: ignore[operator]


def output_type(name: str, fields: Iterable[str]) -> type[Any]:
    """The output schema of a branch or map-body subgraph: only what it declares it writes."""
    return cast("type[Any]", TypedDict(name, dict.fromkeys(fields, Any), total=False))  # type: ignore[operator]


def initial_state(workflow: Workflow, run_input: Any) -> dict[str, Any]:
    """State at the start of a run: declared defaults, then input keys naming state fields."""
    reducers = field_reducers(workflow)
    state: dict[str, Any] = {
        name: spec.default for name, spec in workflow.state.items() if spec.default is not None
    }
    if isinstance(run_input, dict):
        state.update({k: v for k, v in run_input.items() if k in reducers})
    return state
