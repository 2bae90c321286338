"""Control-flow nodes that do no I/O: ``router``, ``set``, ``fail`` and ``end``."""

from __future__ import annotations

from langgraph.graph import END

from trellis.dsl.models import EndNode, FailNode, RouterNode, SetNode
from trellis.errors import NamedError
from trellis.expressions import compile_expression, compile_template, evaluate_map
from trellis.nodes._context import NodeContext
from trellis.nodes._wrapper import Body, Outcome


def build_router(node_id: str, node: RouterNode) -> Body:
    routes = [(compile_expression(route.when), route.next) for route in node.routes]
    default = node.default or END

    async def body(ctx: NodeContext) -> Outcome:
        for index, (condition, target) in enumerate(routes):
            if condition.evaluate(ctx.bindings) is True:
                return Outcome(result={"route": target, "matched": index}, goto=target)
        return Outcome(result={"route": default, "matched": None}, goto=default)

    return body


def build_set(node_id: str, node: SetNode) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        values = evaluate_map(node.values, ctx.bindings)
        return Outcome(result=values, update=values)

    return body


def build_fail(node_id: str, node: FailNode) -> Body:
    message = compile_template(node.message) if node.message else None

    async def body(ctx: NodeContext) -> Outcome:
        text = message.render(ctx.bindings) if message else f"workflow failed at node {ctx.node!r}"
        raise NamedError(node.error, text, node=ctx.node, retryable=False)

    return body


def build_end(node_id: str, node: EndNode) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        return Outcome(goto=END)

    return body
