"""``tool`` nodes: call a callable from the project's registry with CEL-evaluated arguments.

Async tools run on the event loop and honour timeouts and cancellation; sync tools run in a
worker thread, which a timeout abandons but cannot interrupt (Python threads cannot be
killed) — prefer async tools for anything slow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from trellis.dsl.models import ToolNode
from trellis.errors import ConnectionFailed, TimeoutExceeded, ToolError, WorkflowError
from trellis.expressions import evaluate_map
from trellis.nodes._context import NodeContext
from trellis.nodes._env import BuildEnv
from trellis.nodes._wrapper import Body, Outcome


def build(node_id: str, node: ToolNode, env: BuildEnv) -> Body:
    tool = env.registry.get_tool(node.tool)

    async def body(ctx: NodeContext) -> Outcome:
        kwargs: dict[str, Any] = evaluate_map(node.args, ctx.bindings)
        if tool.wants_context:
            kwargs["ctx"] = ctx
        try:
            if tool.is_async:
                result = await tool.fn(**kwargs)
            else:
                result = await asyncio.to_thread(tool.fn, **kwargs)
        except WorkflowError:
            raise
        except TimeoutError as exc:
            raise TimeoutExceeded(f"tool {tool.name!r} timed out: {exc}") from exc
        except ConnectionError as exc:
            raise ConnectionFailed(f"tool {tool.name!r}: {exc}") from exc
        except Exception as exc:
            raise ToolError(
                f"tool {tool.name!r} raised {type(exc).__name__}: {exc}",
                details={"exception": type(exc).__name__},
            ) from exc
        return Outcome(result=result)

    return body
