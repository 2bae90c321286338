"""The workloads, written twice: as Trellis definitions and as hand-built LangGraph graphs.

Both sides of a comparison do the same work: a linear chain of ``n`` no-op async steps, or one
fan-out of sleeping branches joined by one node. The Trellis definitions call tools from a
private :class:`~trellis.registry.Registry`, so the benchmarks never touch the process-wide one.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from trellis.registry import Registry

FANOUT_SLEEPS: tuple[float, ...] = (0.3, 0.5, 0.1, 0.05)
"""Seconds each branch of the troubleshooting-shaped fan-out sleeps; the floor is their max."""


def tools() -> Registry:
    """A registry with the two tools the definitions call: ``noop`` and ``sleep``."""
    registry = Registry()

    @registry.tool("noop")
    async def noop() -> None:
        """Does nothing, asynchronously."""

    @registry.tool("sleep")
    async def sleep(seconds: float) -> float:
        """Sleeps ``seconds`` on the event loop and returns them."""
        await asyncio.sleep(seconds)
        return seconds

    return registry


def thread(thread_id: str, **configurable: Any) -> RunnableConfig:
    """The config of one invocation on its own checkpoint thread."""
    return {"configurable": {"thread_id": thread_id, **configurable}}


def node_ids(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"n{i:0{width}d}" for i in range(count)]


# -- Trellis definitions ----------------------------------------------------------------------


def linear_definition(count: int, *, name: str | None = None) -> str:
    """YAML of ``count`` chained ``tool`` nodes calling ``noop`` (no args, no output)."""
    ids = node_ids(count)
    lines = [
        f"name: {name or f'bench-linear-{count}'}",
        "description: benchmark workload, a chain of no-op tool nodes",
        f"start: {ids[0]}",
        "nodes:",
    ]
    for current, following in zip(ids, [*ids[1:], None], strict=True):
        successor = f", next: {following}" if following else ""
        lines.append(f"  {current}: {{type: tool, tool: noop{successor}}}")
    return "\n".join(lines) + "\n"


def fanout_definition(sleeps: tuple[float, ...] = FANOUT_SLEEPS, *, name: str = "bench-fanout") -> str:
    """YAML of one ``parallel`` node whose branches each call ``sleep``, then a join node."""
    lines = [
        f"name: {name}",
        "description: benchmark workload, the troubleshooting fan-out shape",
        "state: {slept: {reducer: append}, joined: {type: integer}}",
        "start: gather",
        "nodes:",
        "  gather:",
        "    type: parallel",
        "    branches:",
    ]
    for index, seconds in enumerate(sleeps):
        lines.append(
            f"      b{index}: [{{type: tool, tool: sleep, args: {{seconds: {seconds}}}, "
            "output: {slept: '[result]'}}]"
        )
    lines += [
        "    next: join",
        "  join: {type: set, values: {joined: 'size(state.slept)'}}",
    ]
    return "\n".join(lines) + "\n"


# -- hand-built LangGraph graphs -------------------------------------------------------------


class LinearState(TypedDict, total=False):
    started: bool


class FanoutState(TypedDict, total=False):
    slept: Annotated[list[float], operator.add]
    joined: int


async def _noop(state: LinearState) -> dict[str, Any]:
    return {}


def linear_builder(count: int) -> StateGraph[LinearState, None, LinearState, LinearState]:
    """An uncompiled chain of ``count`` no-op async nodes joined by static edges."""
    builder: StateGraph[LinearState, None, LinearState, LinearState] = StateGraph(LinearState)
    ids = node_ids(count)
    for node in ids:
        builder.add_node(node, _noop)
    builder.add_edge(START, ids[0])
    for current, following in itertools.pairwise(ids):
        builder.add_edge(current, following)
    builder.add_edge(ids[-1], END)
    return builder


def linear_graph(
    count: int, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> CompiledStateGraph[LinearState, None, LinearState, LinearState]:
    return linear_builder(count).compile(checkpointer=checkpointer)


def _sleeper(seconds: float) -> Any:
    async def branch(state: FanoutState) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slept": [seconds]}

    return branch


async def _join(state: FanoutState) -> dict[str, Any]:
    return {"joined": len(state.get("slept", []))}


def fanout_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None, sleeps: tuple[float, ...] = FANOUT_SLEEPS
) -> CompiledStateGraph[FanoutState, None, FanoutState, FanoutState]:
    """Static fan-out from ``START`` to one sleeping node per branch, fan-in at ``join``."""
    builder: StateGraph[FanoutState, None, FanoutState, FanoutState] = StateGraph(FanoutState)
    branches = [f"b{i}" for i in range(len(sleeps))]
    for branch, seconds in zip(branches, sleeps, strict=True):
        builder.add_node(branch, _sleeper(seconds))
        builder.add_edge(START, branch)
    builder.add_node("join", _join)
    builder.add_edge(branches, "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=checkpointer)
