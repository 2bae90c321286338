"""``agent`` nodes: POST the CEL-evaluated ``input`` to a registered agent; ``result`` is its answer.

The agent is looked up by name at call time (a change to the registry applies to the next call,
without a restart). The call is guarded by the agent's circuit breaker (``agent:<name>``), sent
with the agent's auth header and time limit, and its answer must be JSON matching the agent's
``response_schema`` when it has one. Every outcome feeds the agent's health.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from trellis._jsonschema import first_violation
from trellis.dsl.models import AgentNode
from trellis.errors import AgentUnavailable, NotFound, ValidationError
from trellis.expressions import evaluate_map
from trellis.nodes._context import NodeContext
from trellis.nodes._env import BuildEnv
from trellis.nodes._guard import guarded
from trellis.nodes._retry import RetryPlan
from trellis.nodes._wrapper import Body, Outcome
from trellis.nodes.http import send
from trellis.resilience import breaker_key


def build(node_id: str, node: AgentNode, env: BuildEnv) -> Body:
    async def body(ctx: NodeContext) -> Outcome:
        what = f"agent {node.agent!r} (node {ctx.node!r})"
        agent = None if env.agents is None else await env.agents.get(node.agent)
        if agent is None:
            raise NotFound(
                f"{what}: no agent named {node.agent!r} is registered "
                "(register it with POST /v1/agents or `trellis agents register`)",
                details={"agent": node.agent},
            )
        if not agent.enabled:
            raise AgentUnavailable(f"{what}: the agent is disabled", details={"agent": node.agent})
        spec = agent.spec
        headers = {}
        if spec.auth is not None:
            headers[spec.auth.header] = spec.auth.value(agent.name)
        payload = evaluate_map(node.input, ctx.bindings)

        async def call() -> Any:
            response = await send(
                env,
                "POST",
                spec.url(node.path),
                what=what,
                json=payload,
                headers=headers,
                timeout_seconds=spec.timeout_seconds,
            )
            try:
                answer = response.json()
            except ValueError as exc:
                raise ValidationError(
                    f"{what} answered a body that is not JSON: {exc}", details={"response": True}
                ) from exc
            if spec.response_schema is not None:
                violation = first_violation(spec.response_schema, answer)
                if violation is not None:
                    path, message = violation
                    raise ValidationError(
                        f"{what} answered with a body that does not match its response schema "
                        f"at {path}: {message}",
                        details={"response": True, "path": path},
                    )
            return answer

        def observe(ok: bool, latency_ms: float | None, error: str | None) -> None:
            if env.health is not None:
                env.health.observe(agent.name, ok=ok, latency_ms=latency_ms, error=error)

        result = await guarded(ctx, env, breaker_key("agent", agent.name), spec.breaker, call, observe)
        return Outcome(result=result)

    return body


def retry_lookup(agent_name: str, env: BuildEnv) -> Callable[[], Awaitable[RetryPlan | None]]:
    """The run-time retry policy of an ``agent`` node without its own: the agent's, if it has one."""

    async def lookup() -> RetryPlan | None:
        agent = None if env.agents is None else await env.agents.get(agent_name)
        if agent is None or agent.spec.retry is None:
            return None
        return RetryPlan.from_spec(agent.spec.retry)

    return lookup
