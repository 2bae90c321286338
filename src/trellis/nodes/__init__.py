"""Node types: one module per type, plus the wrapper every definition node runs in.

Public: :class:`NodeContext`, what a tool receives when it declares a ``ctx`` parameter::

    from trellis.nodes import NodeContext

    @registry.tool("crawl")
    async def crawl(url: str, ctx: NodeContext) -> list[str]:
        ctx.progress("fetching", url=url)   # a node.progress event; also a heartbeat
        ...
"""

from trellis.nodes._context import NodeContext

__all__ = ["NodeContext"]
