"""One definition node on its own, built exactly as the graph builds it (single-node execution).

The callable is the node LangGraph would run — bindings, timeouts, ``output`` mapping, routing
with ``Command`` — so executing it with a given state shows what the node would do in a run.
"""

from __future__ import annotations

from dataclasses import replace

from langgraph.graph import END

from trellis.compiler._builder import ChildLoader, GraphBuilder
from trellis.compiler._state import field_reducers, state_type
from trellis.dsl.models import ApprovalNode, MapNode, ParallelNode, WaitNode, Workflow
from trellis.dsl.walk import implicit_next
from trellis.errors import NotFound, ValidationError
from trellis.nodes._env import BuildEnv
from trellis.nodes._retry import RetryPlan
from trellis.nodes._wrapper import WrappedNode, make_node

ALONE_UNSUPPORTED = (ParallelNode, MapNode, ApprovalNode, WaitNode)
"""Node types that only make sense inside a run: fan-outs (their work happens in other nodes)
and the ones that park the run (they need a checkpoint to resume from)."""


async def build_single_node(
    workflow: Workflow, node_id: str, *, env: BuildEnv, load_child: ChildLoader, retries: bool = False
) -> WrappedNode:
    """The LangGraph node function of ``node_id`` in ``workflow``, callable as ``node(state, config)``.

    Args:
        retries: keep the node's retry policy; by default one attempt is made, so an error
            shows at once instead of after the policy's backoff.

    Raises:
        NotFound: the workflow has no node ``node_id`` (the message lists the ones it has).
        ValidationError: the node is a ``parallel``, ``map``, ``approval`` or ``wait`` node.
    """
    reducers = field_reducers(workflow)
    builder = GraphBuilder(
        workflow=workflow,
        env=env,
        state_cls=state_type(f"{workflow.name.replace('-', '_')}_state", reducers),
        reducers=reducers,
        load_child=load_child,
    )
    ref = next((r for r in builder.refs if r.id == node_id), None)
    if ref is None:
        known = ", ".join(r.id for r in builder.refs)
        raise NotFound(
            f"workflow {workflow.name!r} has no node {node_id!r} (its nodes: {known})",
            details={"workflow": workflow.name, "node": node_id},
        )
    if isinstance(ref.node, ALONE_UNSUPPORTED):
        raise ValidationError(
            f"node {node_id!r} is a {ref.node.type} node, which cannot be executed alone: "
            "fan-outs do their work in other nodes, approval and wait nodes park a run",
            details={"node": node_id, "type": ref.node.type},
        )
    members = builder.scopes.get(ref.scope, [])
    successor = ref.node.next or implicit_next(members, members.index(ref)) or END
    plan = builder._plan(ref, successor, in_map=False)
    if not retries:
        plan = replace(plan, retry=RetryPlan(), retry_lookup=None)
    return make_node(plan, await builder._body(ref.id, ref.node))
