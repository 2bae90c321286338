"""``parallel`` and ``map`` nodes: fan out to subgraphs, then join.

Each parallel branch and each map body is its own compiled subgraph, invoked from a runner
node with the parent's config, so it checkpoints under the parent's thread and can be
interrupted and resumed (a body of one node that can neither park nor loop is that node,
called directly: see ``trellis.compiler._builder.OneStep``). The runner returns only the
branch's *changes* to the declared fields it writes, never the state it inherited — the two
LangGraph traps this avoids are kept as regression tests:

1. in a flat graph, a failed-and-handled branch never writes to the join's barrier and the
   join silently never runs; here a failed branch is *recorded* and the join always runs;
2. a branch subgraph returning its whole state makes ``append`` fields double; here only the
   delta goes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.types import Send

from trellis.dsl.models import MapNode, ParallelNode
from trellis.errors import ExpressionError, NamedError, as_workflow_error
from trellis.expressions import compile_expression
from trellis.nodes._channels import FAILURES_KEY, INDEX_KEY, ITEM_KEY, MAP_KEY, RESET, RESULT_KEY
from trellis.nodes._context import NodeContext, emit, services_of
from trellis.nodes._wrapper import Body, Outcome, node_key

Runner = Callable[[dict[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]


class Invocable(Protocol):
    """What a runner invokes: a body's compiled subgraph, or the one node of a one-step body."""

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, /) -> Any: ...


def delta(before: Mapping[str, Any], after: Mapping[str, Any], reducers: Mapping[str, str]) -> dict[str, Any]:
    """The update that turns ``before`` into ``after`` under each field's reducer."""
    changes: dict[str, Any] = {}
    for name, value in after.items():
        if name.startswith("__") or name not in reducers:
            continue
        old = before.get(name)
        reducer = reducers[name]
        if reducer == "append" and isinstance(value, list):
            prefix = old if isinstance(old, list) else []
            added = value[len(prefix) :] if value[: len(prefix)] == prefix else value
            if added:
                changes[name] = added
        elif reducer == "merge" and isinstance(value, dict) and isinstance(old, dict):
            changed = {k: v for k, v in value.items() if k not in old or old[k] != v}
            if changed:
                changes[name] = changed
        elif value != old:
            changes[name] = value
    return changes


# -- parallel ---------------------------------------------------------------------------------


def branch_runner(node_id: str, branch: str, graph: Invocable, reducers: Mapping[str, str]) -> Runner:
    """The runner of one branch of ``parallel`` node ``node_id``.

    A parallel node has no node of its own before its branches (routes to it start its
    runners, see :attr:`~trellis.nodes._wrapper.NodePlan.routes`), which saves the run a
    superstep and its checkpoint. So every runner announces the node (the run's tracker keeps
    the first announcement of an attempt), and every runner writes its branch's entry in the
    failures channel, ``None`` when it succeeded: a later visit overwrites each entry rather
    than needing them reset.
    """

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        services = services_of(config)
        key = services.key_prefix + node_key(node_id, state)
        done, _ = services.prior_attempt(key)
        emit("node.started", key, done + 1, type="parallel")
        try:
            after = await graph.ainvoke(state, config)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            problem = as_workflow_error(exc).to_problem()
            return {FAILURES_KEY: {node_id: {branch: problem}}}
        return {**delta(state, after or {}, reducers), FAILURES_KEY: {node_id: {branch: None}}}

    run.__name__ = f"branch_{node_id}_{branch}"
    return run


def parallel_join(node_id: str, node: ParallelNode) -> Body:
    names = list(node.branches)
    needed = node.min_success if node.min_success is not None else len(names)

    async def body(ctx: NodeContext) -> Outcome:
        state = ctx.state
        entries: dict[str, Any] = state.get(FAILURES_KEY, {}).get(node_id, {})
        failed = {b: entries[b] for b in names if entries.get(b) is not None}
        succeeded = [b for b in names if b not in failed]
        result = {"succeeded": succeeded, "failed": failed}
        if len(succeeded) < needed:
            first = failed[next(b for b in names if b in failed)]
            reasons = "; ".join(f"{b}: {failed[b].get('detail')}" for b in failed)
            raise NamedError(
                first.get("error", "BranchFailed"),
                f"parallel node {node_id!r}: {len(failed)} of {len(names)} branches failed "
                f"({reasons}); {needed} had to succeed",
                details=result,
            )
        return Outcome(result=result)

    return body


# -- map ----------------------------------------------------------------------------------------


def map_entry(node_id: str, node: MapNode, item_name: str, collect_name: str) -> Body:
    items = compile_expression(node.items)

    async def body(ctx: NodeContext) -> Outcome:
        values = items.evaluate(ctx.bindings)
        if not isinstance(values, list):
            raise ExpressionError(
                f"map node {ctx.node!r}: items={node.items!r} gave {type(values).__name__}, not a list"
            )
        raw = dict(ctx.state)
        sends: list[str | Send] = [
            Send(item_name, {**raw, ITEM_KEY: value, INDEX_KEY: index}) for index, value in enumerate(values)
        ]
        return Outcome(
            result={"count": len(values)},
            goto=sends or [collect_name],
            update={MAP_KEY: {node_id: RESET}},
        )

    return body


def item_runner(node_id: str, node: MapNode, graph: Invocable, reducers: Mapping[str, str]) -> Runner:
    limit = node.max_concurrency

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        index = str(state.get(INDEX_KEY))
        services = services_of(config)
        try:
            if limit is None:
                after = await graph.ainvoke(state, config)
            else:
                async with services.semaphore(f"map:{node_id}", limit):
                    after = await graph.ainvoke(state, config)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            problem = as_workflow_error(exc, node=node_key(node_id, state)).to_problem()
            return {MAP_KEY: {node_id: {index: {"error": problem}}}}
        after = after or {}
        update = delta(state, after, reducers)
        update[MAP_KEY] = {node_id: {index: {"result": after.get(RESULT_KEY)}}}
        return update

    run.__name__ = f"items_{node_id}"
    return run


def map_collect(node_id: str, node: MapNode) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        state = ctx.state
        entries: dict[str, Any] = dict(state.get(MAP_KEY, {}).get(node_id, {}))
        ordered = [entries[k] for k in sorted(entries, key=int)]
        errors = {k: e["error"] for k, e in entries.items() if "error" in e}
        if errors:
            first = errors[min(errors, key=int)]
            raise NamedError(
                first.get("error", "ItemFailed"),
                f"map node {node_id!r}: {len(errors)} of {len(ordered)} items failed; "
                f"first (item {min(errors, key=int)}): {first.get('detail')}",
                details={"failed": errors},
            )
        results = [e.get("result") for e in ordered]
        update = {node.collect: results} if node.collect else None
        return Outcome(result=results, update=update)

    return body
