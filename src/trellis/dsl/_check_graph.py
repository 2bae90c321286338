"""Checks on the node graph: targets, routers, reachability and loops without an exit.

Each scope (the top level, one parallel branch, one map body) is its own graph: a node may
only name nodes of its own scope. Edges are ``next`` (or, inside a list, the following node
when ``next`` is omitted), router routes and ``default``, ``catch[].next`` and an approval's
``timeout.next``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from trellis.dsl._subject import Subject, describe_scope, targets
from trellis.dsl.diagnostics import Code, Diagnostic, did_you_mean, error, listing
from trellis.dsl.models import RouterNode
from trellis.dsl.walk import TOP_SCOPE, NodeRef


def check_graph(subject: Subject) -> Iterator[Diagnostic]:
    """``UNKNOWN_TARGET``, ``CATCH_LEAVES_SCOPE``, ``ROUTER_WITHOUT_DEFAULT``,
    ``UNREACHABLE_NODE`` and ``CYCLE_WITHOUT_EXIT``."""
    yield from _check_start(subject)
    yield from _check_default_catch(subject)
    for ref in subject.refs:
        yield from _check_targets(subject, ref)
        if isinstance(ref.node, RouterNode) and not isinstance(ref.node.default, str):
            yield error(
                Code.ROUTER_WITHOUT_DEFAULT,
                ref.pointer + "/default",
                f"router `{ref.id}` has no `default`: when no route matches, the run would have "
                "nowhere to go; add `default: <node id>`",
            )
    for scope, members in subject.scopes.items():
        yield from _check_reachable(subject, scope, members)
        yield from _check_cycles(subject, members)


def _check_start(subject: Subject) -> Iterator[Diagnostic]:
    start = subject.workflow.start
    if not isinstance(start, str) or start in subject.scope_ids[TOP_SCOPE]:
        return
    top = subject.scope_ids[TOP_SCOPE]
    elsewhere = subject.scopes_of.get(start)
    if elsewhere:
        reason = f"`{start}` is in {describe_scope(elsewhere[0])}; `start` must name a top-level node"
    else:
        reason = f"no top-level node `{start}`{did_you_mean(start, top)}"
    yield error(
        Code.UNKNOWN_TARGET, "/start", f"`start: {start}` — {reason}; top-level nodes: {listing(top)}"
    )


def _check_default_catch(subject: Subject) -> Iterator[Diagnostic]:
    top = subject.scope_ids[TOP_SCOPE]
    for i, handler in enumerate(subject.workflow.defaults.catch or []):
        target = handler.next
        if not isinstance(target, str) or target in top:
            continue
        elsewhere = subject.scopes_of.get(target)
        shown = f"`defaults.catch[{i}].next: {target}`"
        if elsewhere:
            yield error(
                Code.CATCH_LEAVES_SCOPE,
                f"/defaults/catch/{i}/next",
                f"{shown} — `{target}` is in {describe_scope(elsewhere[0])}; a default fallback must be "
                f"a top-level node ({listing(top)})",
            )
        else:
            yield error(
                Code.UNKNOWN_TARGET,
                f"/defaults/catch/{i}/next",
                f"{shown} — no top-level node `{target}`{did_you_mean(target, top)}; "
                f"valid targets: {listing(top)}",
            )


def _check_targets(subject: Subject, ref: NodeRef) -> Iterator[Diagnostic]:
    members = subject.scope_ids[ref.scope]
    for found in targets(ref.node):
        if found.target in members:
            continue
        path = ref.pointer + found.suffix
        shown = f"`{found.label}: {found.target}` in node `{ref.id}`"
        elsewhere = subject.scopes_of.get(found.target)
        if elsewhere:
            yield error(
                Code.CATCH_LEAVES_SCOPE,
                path,
                f"{shown} — `{found.target}` is in {describe_scope(elsewhere[0])}, but this node is in "
                f"{describe_scope(ref.scope)}; a node can only go to nodes of its own scope "
                f"({listing(members - {ref.id})})",
            )
        else:
            yield error(
                Code.UNKNOWN_TARGET,
                path,
                f"{shown} — no node `{found.target}` in {describe_scope(ref.scope)}"
                f"{did_you_mean(found.target, members)}; valid targets: {listing(members - {ref.id})}",
            )


def _check_reachable(subject: Subject, scope: str, members: list[NodeRef]) -> Iterator[Diagnostic]:
    if not members:
        return
    if scope == TOP_SCOPE:
        start = subject.workflow.start
        if not isinstance(start, str) or start not in subject.scope_ids[TOP_SCOPE]:
            return  # reported as UNKNOWN_TARGET at /start; everything would look unreachable
        entry, origin = start, f"`start` (`{start}`)"
    else:
        entry, origin = members[0].id, f"the first node of {describe_scope(scope)} (`{members[0].id}`)"
    by_id = {ref.id: ref for ref in members}
    reached = {entry}
    if scope == TOP_SCOPE:  # a default fallback can follow any node
        default_targets = (h.next for h in subject.workflow.defaults.catch or [])
        reached.update(t for t in default_targets if isinstance(t, str) and t in by_id)
    pending = list(reached)
    while pending:
        for following in _followers(subject, by_id[pending.pop()]):
            if following not in reached:
                reached.add(following)
                pending.append(following)
    for ref in members:
        if ref.id not in reached:
            yield error(
                Code.UNREACHABLE_NODE,
                ref.pointer,
                f"node `{ref.id}` is never reached: no `next`, route, `default`, `catch.next` or "
                f"`timeout.next` leads to it from {origin}",
            )


def _followers(subject: Subject, ref: NodeRef) -> list[str]:
    """Successors, plus the likely intended node of each misspelt target, so that one typo is
    reported once (as ``UNKNOWN_TARGET``) and not again as unreachable nodes."""
    members = subject.scope_ids[ref.scope]
    found = subject.successors(ref)
    for target in targets(ref.node):
        if target.target not in members:
            found.extend(difflib.get_close_matches(target.target, list(members), n=1, cutoff=0.6))
    return found


def _check_cycles(subject: Subject, members: list[NodeRef]) -> Iterator[Diagnostic]:
    by_id = {ref.id: ref for ref in members}
    edges = {ref.id: subject.successors(ref) for ref in members}
    # Nodes from which an end of the scope can be reached: walk the edges backwards from exits.
    incoming: dict[str, list[str]] = {node: [] for node in edges}
    for node, followers in edges.items():
        for following in followers:
            incoming[following].append(node)
    can_exit = {ref.id for ref in members if subject.can_end(ref)}
    pending = list(can_exit)
    while pending:
        for previous in incoming[pending.pop()]:
            if previous not in can_exit:
                can_exit.add(previous)
                pending.append(previous)
    order = {ref.id: i for i, ref in enumerate(members)}
    for component in _strongly_connected(edges):
        looping = len(component) > 1 or component[0] in edges[component[0]]
        if not looping or any(node in can_exit for node in component):
            continue
        ordered = sorted(component, key=order.__getitem__)
        loop = " → ".join(f"`{node}`" for node in [*ordered, ordered[0]])
        yield error(
            Code.CYCLE_WITHOUT_EXIT,
            by_id[ordered[0]].pointer,
            f"nodes {loop} loop forever: no path leads out of the loop to an end; give a router "
            "in it a route or `default` that leaves the loop",
        )


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (definitions can be deep enough to hit recursion limits)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            followers = edges[node]
            if child < len(followers):
                work.append((node, child + 1))
                following = followers[child]
                if following not in index:
                    work.append((following, 0))
                elif following in on_stack:
                    low[node] = min(low[node], index[following])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
