"""Mermaid flowchart of a definition, as its author wrote it (not the compiled graph's
synthetic fan-out and join nodes): ``trellis graph FILE`` and the dashboard draw this."""

from __future__ import annotations

from collections.abc import Sequence

from trellis.dsl.models import AnyNode, ApprovalNode, MapNode, ParallelNode, RouterNode, Workflow
from trellis.dsl.walk import NodeRef, implicit_next, scope_members, walk

_SHAPES = {
    "router": ("{", "}"),
    "approval": ("[/", "/]"),
    "wait": ("([", "])"),
    "end": ("((", "))"),
    "fail": ("[[", "]]"),
    "parallel": ("[[", "]]"),
    "map": ("[[", "]]"),
}


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(workflow: Workflow) -> str:
    """A ``flowchart TD`` of every node, route, fallback and branch."""
    refs = list(walk(workflow))
    scopes = scope_members(refs)
    lines = ["flowchart TD", "    __start__((start))"]
    lines += _declare(scopes.get("", []), scopes, indent="    ")
    edges = _edges(refs, scopes)
    if any(line.endswith(" __end__") for line in edges):
        lines.append("    __end__((end))")
    lines.append(f"    __start__ --> {workflow.start}")
    lines += edges
    return "\n".join(lines) + "\n"


def _declare(members: Sequence[NodeRef], scopes: dict[str, list[NodeRef]], indent: str) -> list[str]:
    lines: list[str] = []
    for ref in members:
        open_, close = _SHAPES.get(ref.node.type, ("[", "]"))
        lines.append(f'{indent}{ref.id}{open_}"{_label(ref.id)}<br/><small>{ref.node.type}</small>"{close}')
        node = ref.node
        if isinstance(node, ParallelNode):
            for branch in node.branches:
                scope = f"{ref.id}/{branch}"
                lines.append(f'{indent}subgraph {ref.id}__{branch}["{ref.id} / {branch}"]')
                lines += _declare(scopes.get(scope, []), scopes, indent + "    ")
                lines.append(f"{indent}end")
        elif isinstance(node, MapNode):
            lines.append(f'{indent}subgraph {ref.id}__each["{ref.id}: for each item"]')
            lines += _declare(scopes.get(ref.id, []), scopes, indent + "    ")
            lines.append(f"{indent}end")
    return lines


def _edges(refs: Sequence[NodeRef], scopes: dict[str, list[NodeRef]]) -> list[str]:
    lines: list[str] = []
    for ref in refs:
        node: AnyNode = ref.node
        members = scopes[ref.scope]
        position = members.index(ref)
        successor = node.next or implicit_next(members, position)
        if successor is None and ref.scope == "" and node.type != "fail":
            successor = "__end__"  # the run ends here (inside a branch or body, its scope does)
        if isinstance(node, RouterNode):
            for route in node.routes:
                lines.append(f'    {ref.id} -->|"{_label(route.when)}"| {route.next}')
            if node.default:
                lines.append(f"    {ref.id} -->|default| {node.default}")
        elif successor and node.type != "fail":
            lines.append(f"    {ref.id} --> {successor}")
        if isinstance(node, ParallelNode):
            for branch in node.branches:
                first = scopes[f"{ref.id}/{branch}"][0].id
                lines.append(f"    {ref.id} -.-> {first}")
        if isinstance(node, MapNode) and scopes.get(ref.id):
            lines.append(f"    {ref.id} -.->|each| {scopes[ref.id][0].id}")
        for catch in node.catch or []:
            errors = ", ".join(catch.errors)
            if catch.next:
                lines.append(f'    {ref.id} -.->|"catch {errors}"| {catch.next}')
            elif successor:  # a default value, then on to the node's own successor
                lines.append(f'    {ref.id} -.->|"catch {errors}: defaults"| {successor}')
        if isinstance(node, ApprovalNode) and node.timeout is not None:
            lines.append(f"    {ref.id} -.->|timeout| {node.timeout.next}")
    return lines
