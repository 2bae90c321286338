"""Definition → LangGraph ``StateGraph``.

Every definition node becomes one LangGraph node that routes with ``Command(goto=...)``;
``catch`` becomes that node's ``error_handler``. A ``parallel`` node becomes one runner per
branch (each invoking the branch's own compiled subgraph, whose ``output_schema`` is what the
branch writes, or its one node) and a join behind a list edge (the barrier that waits for every
branch); a route to the parallel node goes to its runners at once. A ``map`` node becomes a
fan-out of ``Send``s to one item runner (invoking the body's subgraph) and a collector.
Synthetic node names use ``__``, which definition ids cannot contain twice in a row at the start
(ids match ``^[a-z][a-z0-9_]*$``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp, NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from trellis.compiler._state import REDUCERS, output_type, written_fields
from trellis.dsl.models import (
    AgentNode,
    AnyNode,
    ApprovalNode,
    CatchSpec,
    EndNode,
    FailNode,
    HttpNode,
    LlmNode,
    MapNode,
    ParallelNode,
    RetrySpec,
    RouterNode,
    SetNode,
    SubworkflowNode,
    TimeoutSpec,
    ToolNode,
    WaitNode,
    Workflow,
)
from trellis.dsl.walk import NodeRef, implicit_next, scope_members, walk
from trellis.errors import DefinitionError
from trellis.nodes import agent, approval, control, fanout, http, llm, subworkflow, tool
from trellis.nodes._channels import RESULT_KEY
from trellis.nodes._env import BuildEnv
from trellis.nodes._retry import RetryPlan
from trellis.nodes._wrapper import Body, CatchPlan, NodePlan, WrappedNode, make_error_handler, make_node

ChildLoader = Callable[[str, int], Awaitable[subworkflow.Child]]


ONE_STEP_NODES = (ToolNode, HttpNode, AgentNode, LlmNode, SetNode, FailNode, EndNode)
"""Node types that run once and end: they never park (approval, wait, subworkflow) or fan out."""


class OneStep:
    """A branch or map body of one node, run as a direct call rather than as a subgraph.

    The node sees the state and config its runner got, a ``catch`` applies as LangGraph's
    ``error_handler=`` would apply it after the node's own retries, and the node's update is
    applied under each field's reducer (a field not yet set takes the first value as is, as a
    LangGraph channel does), so the runner takes the same delta as from the subgraph.
    """

    def __init__(
        self,
        node: WrappedNode,
        handler: Callable[[dict[str, Any], NodeError, RunnableConfig], Command[Any]] | None,
        reducers: Mapping[str, str],
    ) -> None:
        self.node = node
        self.handler = handler
        self.combine = {name: REDUCERS[r] for name, r in reducers.items() if r in REDUCERS}

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, /) -> dict[str, Any]:
        state: dict[str, Any] = input
        config = config or RunnableConfig()
        try:
            command = await self.node(state, config)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            if self.handler is None:
                raise
            command = self.handler(state, NodeError(node=self.node.plan.id, error=exc), config)
        after = dict(state)
        for name, value in cast(Mapping[str, Any], command.update or {}).items():
            combine = self.combine.get(name)
            after[name] = combine(state[name], value) if combine is not None and name in state else value
        return after


def branch_node(parallel_id: str, branch: str) -> str:
    return f"{parallel_id}__branch__{branch}"


def join_node(node_id: str) -> str:
    return f"{node_id}__join"


def items_node(node_id: str) -> str:
    return f"{node_id}__items"


@dataclass
class GraphBuilder:
    """Builds the graphs of one definition: the top level and one subgraph per inline scope."""

    workflow: Workflow
    env: BuildEnv
    state_cls: type[Any]
    reducers: Mapping[str, str]
    load_child: ChildLoader

    def __post_init__(self) -> None:
        self.refs = list(walk(self.workflow))
        self.scopes = scope_members(self.refs)
        self.routes: dict[str, list[str]] = {
            ref.id: [branch_node(ref.id, b) for b in ref.node.branches]
            for ref in self.refs
            if isinstance(ref.node, ParallelNode)
        }
        """A ``parallel`` node's id → its branch runners, the LangGraph nodes a route to it starts."""

    async def build(self) -> StateGraph[Any, Any, Any, Any]:
        return await self._scope_graph("", self.workflow.start, output_fields=None)

    async def _scope_graph(
        self, scope: str, start: str, output_fields: Sequence[str] | None, in_map: bool = False
    ) -> StateGraph[Any, Any, Any, Any]:
        if output_fields is None:
            graph: StateGraph[Any, Any, Any, Any] = StateGraph(self.state_cls)
        else:
            out = output_type(f"{self.workflow.name}_{scope}_out", output_fields)
            graph = StateGraph(self.state_cls, output_schema=out)
        members = self.scopes.get(scope, [])
        for position, ref in enumerate(members):
            successor = ref.node.next or implicit_next(members, position) or END
            await self._add(graph, ref, successor, in_map)
        for first in self.routes.get(start, [start]):
            graph.add_edge(START, first)
        return graph

    # -- one node -----------------------------------------------------------------------------

    async def _add(
        self, graph: StateGraph[Any, Any, Any, Any], ref: NodeRef, successor: str, in_map: bool
    ) -> None:
        node = ref.node
        plan = self._plan(ref, successor, in_map)
        if isinstance(node, ParallelNode):
            await self._add_parallel(graph, ref, node, plan)
            return
        if isinstance(node, MapNode):
            await self._add_map(graph, ref, node, plan)
            return
        body = await self._body(ref.id, node)
        _add_node(
            graph,
            ref.id,
            make_node(plan, body),
            error_handler=make_error_handler(plan) if plan.catches else None,
        )

    async def _body(self, node_id: str, node: AnyNode) -> Body:
        match node:
            case ToolNode():
                return tool.build(node_id, node, self.env)
            case HttpNode():
                return http.build(node_id, node, self.env)
            case AgentNode():
                return agent.build(node_id, node, self.env)
            case LlmNode():
                return llm.build(node_id, node, self.env)
            case RouterNode():
                return control.build_router(node_id, node)
            case SetNode():
                return control.build_set(node_id, node)
            case FailNode():
                return control.build_fail(node_id, node)
            case EndNode():
                return control.build_end(node_id, node)
            case ApprovalNode():
                return approval.build_approval(node_id, node)
            case WaitNode():
                return approval.build_wait(node_id, node)
            case SubworkflowNode():
                name, _, version = node.workflow.partition("@")
                if not version.isdigit():
                    raise DefinitionError(
                        f"node {node_id!r}: workflow {node.workflow!r} must be pinned as name@version"
                    )
                return subworkflow.build(node_id, node, await self.load_child(name, int(version)))
        raise DefinitionError(f"node {node_id!r}: type {node.type!r} cannot be compiled")  # pragma: no cover

    async def _add_parallel(
        self, graph: StateGraph[Any, Any, Any, Any], ref: NodeRef, node: ParallelNode, plan: NodePlan
    ) -> None:
        runners = self.routes[ref.id]
        for branch, runner in zip(node.branches, runners, strict=True):
            scope = f"{ref.id}/{branch}"
            sub = await self._body_graph(scope, sorted(self._fields_written_in(scope)))
            _add_node(graph, runner, fanout.branch_runner(ref.id, branch, sub, self.reducers))
        join = _replace(plan, announce_start=False, retryable=False)
        _add_node(
            graph,
            join_node(ref.id),
            make_node(join, fanout.parallel_join(ref.id, node)),
            error_handler=make_error_handler(join) if join.catches else None,
        )
        graph.add_edge(runners, join_node(ref.id))

    async def _add_map(
        self, graph: StateGraph[Any, Any, Any, Any], ref: NodeRef, node: MapNode, plan: NodePlan
    ) -> None:
        items, collect = items_node(ref.id), join_node(ref.id)
        entry = _replace(plan, next=END, announce_success=False, retryable=False, output=None)
        _add_node(
            graph,
            ref.id,
            make_node(entry, fanout.map_entry(ref.id, node, items, collect)),
            error_handler=make_error_handler(entry) if entry.catches else None,
        )
        fields = sorted(self._fields_written_in(ref.id))
        sub = await self._body_graph(ref.id, [*fields, RESULT_KEY], in_map=True)
        _add_node(graph, items, fanout.item_runner(ref.id, node, sub, self.reducers))
        join = _replace(plan, announce_start=False, retryable=False)
        _add_node(
            graph,
            collect,
            make_node(join, fanout.map_collect(ref.id, node)),
            error_handler=make_error_handler(join) if join.catches else None,
        )
        graph.add_edge(items, collect)

    async def _body_graph(self, scope: str, fields: Sequence[str], in_map: bool = False) -> fanout.Invocable:
        """What a runner invokes for a branch or map body: its compiled subgraph, or its one node.

        A body subgraph checkpoints under the parent's thread, so that it can park and so that,
        after a crash, its completed nodes are not run again. A body of a single node that can
        neither park nor loop has nothing to gain from that: until it ends there is nothing to
        keep, and once it ends the parent's pending write of its runner task keeps the result.
        Such a body runs as a direct call of its node (:class:`OneStep`): a Pregel loop of its
        own, even without checkpoints, costs more than most nodes' work and sits on the
        critical path of every fan-out.
        """
        members = self.scopes[scope]
        first = members[0]
        if len(members) == 1 and self._one_step(first.node):
            plan = self._plan(first, END, in_map)
            handler = make_error_handler(plan) if plan.catches else None
            return OneStep(make_node(plan, await self._body(first.id, first.node)), handler, self.reducers)
        body = await self._scope_graph(scope, first.id, fields, in_map=in_map)
        return cast(fanout.Invocable, body.compile())

    def _one_step(self, node: AnyNode) -> bool:
        """A node that runs once and ends its scope: no park, no fan-out, no route elsewhere."""
        return (
            isinstance(node, ONE_STEP_NODES)
            and node.next is None
            and all(c.next is None for c in self._catch_specs(node))
        )

    def _catch_specs(self, node: AnyNode) -> Sequence[CatchSpec]:
        """The node's own ``catch`` list, or the workflow's default one."""
        return node.catch if node.catch is not None else (self.workflow.defaults.catch or [])

    # -- policies -------------------------------------------------------------------------------

    def _plan(self, ref: NodeRef, successor: str, in_map: bool) -> NodePlan:
        node = ref.node
        defaults = self.workflow.defaults
        parks = isinstance(node, ApprovalNode | WaitNode)
        retry = self._retry(node.retry if node.retry is not None else defaults.retry)
        own_timeout = None if isinstance(node, ApprovalNode) else node.timeout
        timeout = self._timeout(own_timeout if own_timeout is not None else defaults.timeout)
        catches = self._catch_specs(node)
        return NodePlan(
            id=ref.id,
            type=node.type,
            next=successor,
            retry=RetryPlan() if parks else retry,
            run_timeout=None if parks else timeout.run,
            idle_timeout=None if parks else timeout.idle,
            output=node.output,
            catches=tuple(self._catch(c, successor) for c in catches),
            retryable=not parks,
            record_result=ref.scope != "" and self._in_map_scope(ref.scope),
            retry_lookup=agent.retry_lookup(node.agent, self.env)
            if isinstance(node, AgentNode) and node.retry is None
            else None,
            routes=self.routes,
        )

    def _in_map_scope(self, scope: str) -> bool:
        return "/" not in scope and isinstance(self._node(scope), MapNode)

    def _node(self, node_id: str) -> AnyNode | None:
        return next((r.node for r in self.refs if r.id == node_id), None)

    def _retry(self, spec: RetrySpec | str | None) -> RetryPlan:
        if isinstance(spec, str):
            try:
                spec = self.workflow.policies.retries[spec]
            except KeyError:
                raise DefinitionError(f"unknown retry policy {spec!r}") from None
        return RetryPlan.from_spec(spec) if spec is not None else RetryPlan()

    def _timeout(self, spec: TimeoutSpec | str | None) -> TimeoutSpec:
        if isinstance(spec, str):
            try:
                return self.workflow.policies.timeouts[spec]
            except KeyError:
                raise DefinitionError(f"unknown timeout policy {spec!r}") from None
        return spec or TimeoutSpec()

    @staticmethod
    def _catch(spec: CatchSpec, successor: str) -> CatchPlan:
        return CatchPlan(errors=frozenset(spec.errors), goto=spec.next or successor, output=spec.output)

    def _fields_written_in(self, scope: str) -> set[str]:
        """Public fields written by the nodes of ``scope`` (nested scopes included by ``walk``)."""
        sub = Workflow.model_construct(
            name=self.workflow.name,
            start="",
            nodes={r.id: r.node for r in self.scopes.get(scope, [])},
            defaults=self.workflow.defaults,
            state={},
        )
        return {f for f in written_fields(sub) if f in self.reducers}


def _add_node(graph: StateGraph[Any, Any, Any, Any], name: str, fn: Any, error_handler: Any = None) -> None:
    """``add_node`` for Trellis's node functions (LangGraph's overloads cannot express their
    ``(state, config)`` signature together with an ``error_handler``)."""
    graph.add_node(name, cast(Any, fn), error_handler=error_handler)


def _replace(plan: NodePlan, **changes: Any) -> NodePlan:
    return replace(plan, **changes)
