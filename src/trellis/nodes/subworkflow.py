"""``subworkflow`` nodes: run a pinned version of another workflow as one node.

The child graph is compiled without a checkpointer of its own and invoked with the parent's
config, so it checkpoints inside the parent's thread (its progress survives a crash and an
approval inside it parks the parent run). Its nodes are recorded as ``<node>/<child node>``.
"""

from __future__ import annotations

from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig

from trellis.dsl.models import SubworkflowNode
from trellis.expressions import evaluate_map
from trellis.nodes._context import SERVICES_KEY, ChildServices, NodeContext
from trellis.nodes._wrapper import Body, Outcome


class Child(Protocol):
    """What the node needs of the compiled child workflow."""

    async def invoke_nested(self, state: Any, config: RunnableConfig) -> Any: ...

    def initial_input(self, run_input: Any) -> Any: ...

    def final_output(self, state: Any, run_input: Any) -> Any: ...


def build(node_id: str, node: SubworkflowNode, child: Child) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        child_input = evaluate_map(node.input, ctx.bindings)
        services = ChildServices(parent=ctx.services, run_input=child_input, key_prefix=f"{ctx.node}/")
        config: RunnableConfig = {
            **ctx.config,
            "configurable": {**ctx.config.get("configurable", {}), SERVICES_KEY: services},
        }
        final = await child.invoke_nested(child.initial_input(child_input), config)
        return Outcome(result=child.final_output(final, child_input))

    return body
