"""Walk every node of a definition with its id, scope and JSON-pointer path.

Ids form one flat namespace (the dashboard draws every node, nested ones too):

* a top-level node's id is its key in ``nodes``;
* an inline node (in a ``parallel`` branch or a ``map`` body) uses its ``id`` field when set,
  else ``<parallel id>_<branch>_<index>`` or ``<map id>_<index>``.

A *scope* is the set of nodes that may target each other with ``next``, ``default`` and
``catch.next``: the top level, one parallel branch, or one map body. Inside a branch or body,
a node without ``next`` continues with the node after it in the list; the last one ends the
scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from trellis.dsl.models import AnyNode, MapNode, ParallelNode, Workflow

TOP_SCOPE = ""
"""The scope of top-level nodes."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """One node of a definition, located."""

    id: str
    node: AnyNode
    pointer: str
    """JSON pointer of the node inside the document, e.g. ``/nodes/gather/branches/kb/0``."""
    scope: str
    """``""`` for top level, ``"<parallel id>/<branch>"`` or ``"<map id>"`` for inline nodes."""
    parent: str | None
    """Id of the parallel or map node that contains this one."""
    index: int | None = None
    """Position within its branch or body list."""


def escape_pointer(token: str) -> str:
    """Escape one JSON-pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def inline_id(parent: str, branch: str | None, index: int, node: AnyNode) -> str:
    """The id of an inline node: its own ``id`` or one derived from its position."""
    if node.id:
        return node.id
    if branch is None:
        return f"{parent}_{index}"
    return f"{parent}_{branch}_{index}"


def walk(workflow: Workflow) -> Iterator[NodeRef]:
    """Every node, depth first, parents before children."""
    for node_id, node in workflow.nodes.items():
        yield from _walk_one(node_id, node, f"/nodes/{escape_pointer(node_id)}", TOP_SCOPE, None, None)


def _walk_one(
    node_id: str, node: AnyNode, pointer: str, scope: str, parent: str | None, index: int | None
) -> Iterator[NodeRef]:
    yield NodeRef(node_id, node, pointer, scope, parent, index)
    if isinstance(node, ParallelNode):
        for branch, nodes in node.branches.items():
            base = f"{pointer}/branches/{escape_pointer(branch)}"
            yield from _walk_list(node_id, branch, nodes, base, f"{node_id}/{branch}")
    elif isinstance(node, MapNode):
        yield from _walk_list(node_id, None, node.do, f"{pointer}/do", node_id)


def _walk_list(
    parent: str, branch: str | None, nodes: Sequence[AnyNode], base: str, scope: str
) -> Iterator[NodeRef]:
    for i, child in enumerate(nodes):
        yield from _walk_one(inline_id(parent, branch, i, child), child, f"{base}/{i}", scope, parent, i)


def scope_members(refs: Sequence[NodeRef]) -> dict[str, list[NodeRef]]:
    """Group located nodes by scope, keeping list order."""
    groups: dict[str, list[NodeRef]] = {}
    for ref in refs:
        groups.setdefault(ref.scope, []).append(ref)
    return groups


def implicit_next(scope_list: Sequence[NodeRef], position: int) -> str | None:
    """Successor of the node at ``position`` in an inline list when it sets no ``next``."""
    if scope_list[position].scope == TOP_SCOPE:
        return None
    return scope_list[position + 1].id if position + 1 < len(scope_list) else None
