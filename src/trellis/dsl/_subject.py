"""What the semantic checks look at: a (possibly salvaged) workflow, its located nodes, scopes.

Every check reads the same :class:`Subject`, built once per validation. Nodes are located with
:func:`trellis.dsl.walk.walk`, so ids, scopes and pointers are exactly the compiler's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from trellis.dsl.models import AnyNode, ApprovalNode, ApprovalTimeout, EndNode, FailNode, RouterNode, Workflow
from trellis.dsl.walk import TOP_SCOPE, NodeRef, implicit_next, scope_members, walk


@dataclass(frozen=True, slots=True)
class Target:
    """One place where a node names another node."""

    suffix: str
    """Pointer suffix below the node, e.g. ``/routes/0/next``."""
    label: str
    """How an author would name the field, e.g. ``routes[0].next``."""
    target: str


def targets(node: AnyNode) -> list[Target]:
    """Every node id ``node`` names: ``next``, routes, ``default``, ``catch[].next``, ``timeout.next``."""
    found: list[Target] = []
    if isinstance(node.next, str):
        found.append(Target("/next", "next", node.next))
    if isinstance(node, RouterNode):
        for i, route in enumerate(node.routes or []):
            if isinstance(route.next, str):
                found.append(Target(f"/routes/{i}/next", f"routes[{i}].next", route.next))
        if isinstance(node.default, str):
            found.append(Target("/default", "default", node.default))
    for i, handler in enumerate(node.catch or []):
        if isinstance(handler.next, str):
            found.append(Target(f"/catch/{i}/next", f"catch[{i}].next", handler.next))
    timeout = node.timeout if isinstance(node, ApprovalNode) else None
    if isinstance(timeout, ApprovalTimeout) and isinstance(timeout.next, str):
        found.append(Target("/timeout/next", "timeout.next", timeout.next))
    return found


def is_terminal_type(node: AnyNode) -> bool:
    """``end`` and ``fail`` nodes finish their scope whatever follows them in a list."""
    return isinstance(node, EndNode | FailNode)


def describe_scope(scope: str) -> str:
    """``the top level``, ``branch `kb` of parallel `gather```, ``the body of map `each```."""
    if scope == TOP_SCOPE:
        return "the top level"
    if "/" in scope:
        parent, branch = scope.split("/", 1)
        return f"branch `{branch}` of parallel `{parent}`"
    return f"the body of map `{scope}`"


@dataclass(frozen=True)
class Subject:
    """The definition under check."""

    workflow: Workflow
    refs: tuple[NodeRef, ...]

    @classmethod
    def of(cls, workflow: Workflow) -> Subject:
        """Locate every node of ``workflow``."""
        return cls(workflow, tuple(walk(workflow)))

    @cached_property
    def scopes(self) -> dict[str, list[NodeRef]]:
        """Nodes grouped by scope, in document order (the top level always present)."""
        groups = scope_members(self.refs)
        groups.setdefault(TOP_SCOPE, [])
        return groups

    @cached_property
    def scope_ids(self) -> dict[str, set[str]]:
        """Ids of each scope."""
        return {scope: {ref.id for ref in refs} for scope, refs in self.scopes.items()}

    @cached_property
    def scopes_of(self) -> dict[str, list[str]]:
        """For each id, the scopes where a node has it (more than one only for duplicates)."""
        found: dict[str, list[str]] = {}
        for ref in self.refs:
            found.setdefault(ref.id, []).append(ref.scope)
        return found

    @cached_property
    def fallbacks(self) -> frozenset[tuple[str, str]]:
        """``(scope, id)`` of nodes some ``catch[].next`` of their scope targets (``defaults.catch``
        targets top-level nodes): those nodes can read ``error``."""
        found = {
            (TOP_SCOPE, handler.next)
            for handler in self.workflow.defaults.catch or []
            if isinstance(handler.next, str)
        }
        for ref in self.refs:
            found.update((ref.scope, h.next) for h in ref.node.catch or [] if isinstance(h.next, str))
        return frozenset(found)

    def is_fallback(self, ref: NodeRef) -> bool:
        """Whether some ``catch[].next`` routes failures to ``ref`` (so ``error`` is bound there)."""
        return (ref.scope, ref.id) in self.fallbacks

    def in_map_body(self, ref: NodeRef) -> bool:
        """Whether ``ref`` runs once per item of some enclosing ``map`` (``item``/``index`` bound)."""
        return "/do/" in ref.pointer

    def successors(self, ref: NodeRef) -> list[str]:
        """Ids within ``ref``'s scope that can run right after it (explicit and implicit)."""
        members = self.scope_ids[ref.scope]
        found = [t.target for t in targets(ref.node) if t.target in members]
        following = self._implicit(ref)
        if following is not None and _falls_through(ref.node):
            found.append(following)
        return found

    def can_end(self, ref: NodeRef) -> bool:
        """Whether the flow can end its scope at ``ref``: an end or fail node, a node whose flow
        has nothing after it, or a target outside the scope (reported elsewhere; counted as an
        exit so one mistake does not cascade)."""
        if is_terminal_type(ref.node):
            return True
        members = self.scope_ids[ref.scope]
        if any(t.target not in members for t in targets(ref.node)):
            return True
        return _falls_through(ref.node) and self._implicit(ref) is None

    def _implicit(self, ref: NodeRef) -> str | None:
        if ref.index is None:
            return None
        return implicit_next(self.scopes[ref.scope], self._positions[ref.pointer])

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {ref.pointer: i for refs in self.scopes.values() for i, ref in enumerate(refs)}


def _falls_through(node: AnyNode) -> bool:
    """Whether ``node``, when it succeeds, continues with the next node of its list (if any)."""
    if is_terminal_type(node):
        return False
    if isinstance(node, RouterNode):
        return not isinstance(node.default, str)
    return node.next is None
