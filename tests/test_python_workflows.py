"""Workflows written in Python (a function returning a StateGraph) get the same runtime."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, interrupt

from engine_support import event_types, open_engine
from trellis.registry import Registry
from trellis.types import NodeStatus, RunStatus


class State(TypedDict, total=False):
    text: str
    steps: Annotated[list[str], operator.add]
    approved: bool


def build_registry() -> Registry:
    registry = Registry()
    calls: dict[str, int] = {"flaky": 0}

    @registry.workflow("py-linear")
    def linear() -> StateGraph[Any, Any, Any, Any]:
        async def upper(state: State) -> dict[str, Any]:
            return {"text": state["text"].upper(), "steps": ["upper"]}

        async def exclaim(state: State) -> dict[str, Any]:
            return {"text": state["text"] + "!", "steps": ["exclaim"]}

        graph = StateGraph(State)
        graph.add_node("upper", upper)
        graph.add_node("exclaim", exclaim)
        graph.add_edge(START, "upper")
        graph.add_edge("upper", "exclaim")
        graph.add_edge("exclaim", END)
        return graph

    @registry.workflow("py-gated")
    def gated() -> StateGraph[Any, Any, Any, Any]:
        async def ask(state: State) -> dict[str, Any]:
            decision = interrupt({"kind": "approval", "title": "ship it?"})
            return {"approved": bool(decision.get("approved")), "steps": ["ask"]}

        graph = StateGraph(State)
        graph.add_node("ask", ask)
        graph.add_edge(START, "ask")
        return graph

    @registry.workflow("py-flaky")
    def flaky() -> StateGraph[Any, Any, Any, Any]:
        async def sometimes(state: State) -> dict[str, Any]:
            calls["flaky"] += 1
            if calls["flaky"] < 3:
                raise ConnectionError("not yet")
            return {"steps": ["ok"]}

        async def slow(state: State) -> dict[str, Any]:
            await asyncio.sleep(5)
            return {}

        graph = StateGraph(State)
        graph.add_node("sometimes", sometimes, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0))
        graph.add_node("slow", slow)
        graph.add_edge(START, "sometimes")
        graph.add_edge("sometimes", "slow")
        return graph

    return registry


class TestPythonWorkflows:
    async def test_a_python_workflow_runs_by_name_with_node_events(self, database_url: str) -> None:
        async with open_engine(database_url, build_registry()) as engine:
            run = await engine.submit("py-linear", {"text": "hi", "steps": []})
            assert run.hash.startswith("sha256:")
            done = await engine.execute(run.id)
            assert done.status == RunStatus.SUCCEEDED, done.error
            assert done.output == {"text": "HI!", "steps": ["upper", "exclaim"]}
            assert await event_types(engine, run.id) == [
                "run.queued",
                "run.started",
                "node.started:upper",
                "node.succeeded:upper",
                "node.started:exclaim",
                "node.succeeded:exclaim",
                "run.succeeded",
            ]

    async def test_an_interrupt_in_a_python_workflow_parks_and_resumes_on_approval(
        self, database_url: str
    ) -> None:
        async with open_engine(database_url, build_registry()) as engine:
            run = await engine.execute((await engine.submit("py-gated", {"steps": []})).id)
            assert run.status == RunStatus.WAITING
            await engine.decide(run.id, approved=True, actor="ada")
            done = await engine.execute(run.id)
            assert done.status == RunStatus.SUCCEEDED
            assert done.output["approved"] is True

    async def test_cancelling_a_python_workflow_cancels_its_running_node(self, database_url: str) -> None:
        async with open_engine(database_url, build_registry()) as engine:
            run = await engine.submit("py-flaky", {"steps": []})
            task = asyncio.create_task(engine.execute(run.id))
            for _ in range(100):
                state = await engine.store.get_node_state(run.id, "slow")
                if state is not None and state.status == NodeStatus.RUNNING:
                    break
                await asyncio.sleep(0.02)
            await engine.cancel(run.id, actor="ops")
            done = await task
            assert done.status == RunStatus.CANCELLED
            states = {n.node: n.status for n in await engine.store.list_node_states(run.id)}
            assert states == {"sometimes": NodeStatus.SUCCEEDED, "slow": NodeStatus.CANCELLED}
