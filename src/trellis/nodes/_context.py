"""What a node sees while it runs: its bindings, its attempt, and the run's services.

The runtime hands a :class:`RunServices` to the graph through the LangGraph config
(``configurable["__trellis__"]``), so the compiled graph stays free of any store or HTTP
server: it reads what it needs from there and reports through LangGraph's custom stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer

from trellis.nodes._logs import NodeLogger, log_line

SERVICES_KEY = "__trellis__"
"""Key of the :class:`RunServices` object inside ``config["configurable"]``."""

EVENT_MARKER = "trellis"
"""Key that marks a custom-stream chunk as a Trellis event: ``{"trellis": "node.started", ...}``."""


class RunServices(Protocol):
    """Per-run facts and hooks the runtime provides to nodes."""

    @property
    def run_id(self) -> str: ...

    @property
    def run_input(self) -> Any: ...

    @property
    def key_prefix(self) -> str:
        """Prefix of node keys (``parent_node/`` inside a subworkflow)."""
        ...

    def semaphore(self, key: str, limit: int) -> asyncio.Semaphore:
        """A per-run semaphore (``map.max_concurrency``)."""
        ...

    def prior_attempt(self, node_key: str) -> tuple[int, float | None]:
        """Attempts this node already made in an earlier process, and when the next is due
        (epoch seconds), so a resumed run continues the count instead of restarting it."""
        ...

    def record_log(self, line: dict[str, Any]) -> None:
        """Keep one log line a node emitted (``{ts, level, message, node, attempt, logger,
        data}``) to be stored with the run. May be called from a worker thread."""
        ...


@dataclass(slots=True)
class StandaloneServices:
    """Services for a graph run outside the Trellis runtime (tests, single-node execution)."""

    run_id: str = "local"
    run_input: Any = None
    key_prefix: str = ""
    attempts: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    """The log lines nodes emitted (kept in memory: nothing stores them)."""

    def semaphore(self, key: str, limit: int) -> asyncio.Semaphore:
        return self.semaphores.setdefault(key, asyncio.Semaphore(limit))

    def prior_attempt(self, node_key: str) -> tuple[int, float | None]:
        return self.attempts.get(node_key, (0, None))

    def record_log(self, line: dict[str, Any]) -> None:
        self.logs.append(line)


@dataclass(slots=True)
class ChildServices:
    """Services of a subworkflow: the parent's, with the child's input and a key prefix."""

    parent: RunServices
    run_input: Any
    key_prefix: str

    @property
    def run_id(self) -> str:
        return self.parent.run_id

    def prior_attempt(self, node_key: str) -> tuple[int, float | None]:
        return self.parent.prior_attempt(node_key)

    def semaphore(self, key: str, limit: int) -> asyncio.Semaphore:
        return self.parent.semaphore(self.key_prefix + key, limit)

    def record_log(self, line: dict[str, Any]) -> None:
        self.parent.record_log(line)


def services_of(config: RunnableConfig) -> RunServices:
    """The run's services, or standalone ones when the graph runs outside the runtime."""
    found = config.get("configurable", {}).get(SERVICES_KEY)
    return found if found is not None else StandaloneServices()


def emit(kind: str, node: str | None, attempt: int | None = None, **data: Any) -> None:
    """Send one Trellis event through LangGraph's custom stream (no-op outside a run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # not inside a runnable context
        return
    writer({EVENT_MARKER: kind, "node": node, "attempt": attempt, "data": data})


@dataclass(slots=True)
class NodeContext:
    """Passed to node bodies and to tools that ask for it (``def tool(x, ctx: NodeContext)``)."""

    node: str
    """Id of the node (``id[index]`` inside a map body)."""
    attempt: int
    """1-based attempt number, counting attempts made before a crash."""
    bindings: Mapping[str, Any]
    """Variables visible to expressions: ``state``, ``input``, and ``item``/``index`` in a map."""
    state: Mapping[str, Any]
    """The raw LangGraph state, private channels included."""
    services: RunServices
    config: RunnableConfig
    usage: dict[str, Any] | None = None
    """Token usage of the model calls this attempt made (``llm`` nodes set it with
    :meth:`record_usage`); the node wrapper reports it with the attempt's outcome event."""
    _on_heartbeat: Callable[[], None] | None = None
    _unsettled: list[Callable[[BaseException | None], Awaitable[None]]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.services.run_id

    def heartbeat(self) -> None:
        """Report liveness; resets the node's ``timeout.idle`` clock."""
        if self._on_heartbeat is not None:
            self._on_heartbeat()

    def defer_outcome(self, settle: Callable[[BaseException | None], Awaitable[None]]) -> None:
        """Report the outcome of a call cut short by cancellation once the wrapper knows it.

        A node's ``timeout`` cancels its body: the call in flight sees a cancellation, not a
        timeout. ``settle`` is called by the node wrapper with the ``TimeoutExceeded`` the attempt
        ended with, or ``None`` when the run itself was cancelled.
        """
        self._unsettled.append(settle)

    async def settle(self, error: BaseException | None) -> None:
        """Run the deferred outcome reports (the node wrapper calls this)."""
        pending, self._unsettled = self._unsettled, []
        for settle in pending:
            await settle(error)

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        """Store a log line with the run (served at ``GET /v1/runs/{id}/logs``).

        Example:
            ``ctx.log("fetched the page", rows=3)``; ``ctx.log("slow answer", "warning")``.
        """
        log_line(level, message, **data)

    @property
    def logger(self) -> NodeLogger:
        """A logger whose lines are stored with the run: ``ctx.logger.info("done", n=3)``."""
        return NodeLogger()

    def record_usage(self, model: str, usage: Mapping[str, Any]) -> None:
        """Add a model call's token ``usage`` (OpenAI ``prompt_tokens``/``completion_tokens``)."""
        total = self.usage or {"model": model, "prompt_tokens": 0, "completion_tokens": 0}
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int):
                total[kind] += value
        total["model"] = model
        self.usage = total

    def progress(self, message: str | None = None, **data: Any) -> None:
        """Emit a ``node.progress`` event (also a heartbeat)."""
        self.heartbeat()
        if message is not None:
            data["message"] = message
        emit("node.progress", self.node, self.attempt, **data)
