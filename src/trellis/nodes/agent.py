"""``agent`` nodes: POST the CEL-evaluated ``input`` to a named agent; ``result`` is its JSON answer."""

from __future__ import annotations

from trellis.dsl.models import AgentNode
from trellis.errors import NotFound, ValidationError
from trellis.expressions import evaluate_map
from trellis.nodes._context import NodeContext
from trellis.nodes._env import BuildEnv
from trellis.nodes._wrapper import Body, Outcome
from trellis.nodes.http import send


def build(node_id: str, node: AgentNode, env: BuildEnv) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        endpoint = env.agents.get(node.agent)
        if endpoint is None:
            known = ", ".join(sorted(env.agents)) or "none"
            raise NotFound(f"agent node {ctx.node!r}: no agent named {node.agent!r} (known: {known})")
        url = endpoint.base_url.rstrip("/") + (node.path or endpoint.invoke_path)
        headers = {}
        if (auth := endpoint.auth_header()) is not None:
            headers["Authorization"] = auth
        what = f"agent {node.agent!r} (node {ctx.node!r})"
        response = await send(
            env,
            "POST",
            url,
            what=what,
            json=evaluate_map(node.input, ctx.bindings),
            headers=headers,
            timeout_seconds=endpoint.timeout_seconds,
        )
        try:
            return Outcome(result=response.json())
        except ValueError as exc:
            raise ValidationError(f"{what} answered a body that is not JSON: {exc}") from exc

    return body
