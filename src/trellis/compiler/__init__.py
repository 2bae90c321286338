"""Compile definitions (and Python-defined workflows) into runnable LangGraph graphs.

A :class:`Compiler` belongs to one process and one checkpointer; it caches compiled graphs
by ``(name, version, content hash)`` so a resumed run always executes the graph it started on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from trellis.compiler._builder import GraphBuilder, branch_node, items_node, join_node
from trellis.compiler._mermaid import mermaid
from trellis.compiler._single import build_single_node
from trellis.compiler._state import field_reducers, initial_state, state_type
from trellis.dsl.models import Workflow
from trellis.errors import NotFound
from trellis.expressions import evaluate_map
from trellis.nodes._env import BuildEnv
from trellis.nodes._wrapper import public_state


@dataclass
class CompiledWorkflow:
    """A runnable workflow: the compiled graph and how to map run input/output onto it."""

    name: str
    version: int
    hash: str
    kind: Literal["dsl", "python"]
    graph: Pregel[Any, Any, Any, Any]
    definition: Workflow | None = None
    nested: bool = False
    """Compiled without a checkpointer of its own, to run inside another graph."""

    def initial_input(self, run_input: Any) -> Any:
        """The graph input for a new run."""
        if self.definition is None:
            return run_input
        return initial_state(self.definition, run_input)

    def final_output(self, state: Any, run_input: Any) -> Any:
        """The run's output: the ``output`` mapping over the final state, else the public state."""
        values = public_state(state) if isinstance(state, dict) else state
        if self.definition is None or not self.definition.output:
            return values
        return evaluate_map(self.definition.output, {"state": values, "input": run_input})

    async def invoke_nested(self, state: Any, config: RunnableConfig) -> Any:
        return await self.graph.ainvoke(state, config)

    @property
    def wraps_nodes(self) -> bool:
        """True when Trellis's node wrapper reports node lifecycles (definitions); Python
        workflows are reported from LangGraph's ``tasks`` stream instead."""
        return self.kind == "dsl"


@dataclass
class Compiler:
    """Compiles and caches graphs for one checkpointer."""

    env: BuildEnv
    checkpointer: BaseCheckpointSaver[Any] | None = None
    _cache: dict[tuple[str, int, str, bool], CompiledWorkflow] = field(default_factory=dict)

    def cached(self, name: str, version: int, content_hash: str) -> CompiledWorkflow | None:
        """The graph already compiled for this pinned version, if any (no validation, no I/O)."""
        return self._cache.get((name, version, content_hash, False))

    async def compile(
        self, workflow: Workflow, content_hash: str, *, version: int | None = None, nested: bool = False
    ) -> CompiledWorkflow:
        """Compile a definition (cached by name, version and hash)."""
        key = (workflow.name, version or workflow.version, content_hash, nested)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        reducers = field_reducers(workflow)
        builder = GraphBuilder(
            workflow=workflow,
            env=self.env,
            state_cls=state_type(f"{workflow.name.replace('-', '_')}_state", reducers),
            reducers=reducers,
            load_child=self._load_child,
        )
        graph = await builder.build()
        compiled = CompiledWorkflow(
            name=workflow.name,
            version=key[1],
            hash=content_hash,
            kind="dsl",
            graph=graph.compile(checkpointer=None if nested else self.checkpointer),
            definition=workflow,
            nested=nested,
        )
        self._cache[key] = compiled
        return compiled

    def compile_python(self, name: str, version: int, content_hash: str) -> CompiledWorkflow:
        """Build and compile a Python workflow registered under ``name``."""
        key = (name, version, content_hash, False)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        spec = self.env.registry.get_workflow(name)
        if spec is None:
            raise NotFound(f"no Python workflow named {name!r} is registered in this process")
        built = spec.build()
        if isinstance(built, StateGraph):
            graph: Pregel[Any, Any, Any, Any] = built.compile(checkpointer=self.checkpointer)
        elif isinstance(built, Pregel):
            graph = built.copy(update={"checkpointer": self.checkpointer})
        else:
            raise TypeError(f"workflow {name!r}: build() returned {type(built).__name__}, not a StateGraph")
        compiled = CompiledWorkflow(name=name, version=version, hash=content_hash, kind="python", graph=graph)
        self._cache[key] = compiled
        return compiled

    async def _load_child(self, name: str, version: int) -> CompiledWorkflow:
        if self.env.load_subworkflow is None:
            raise NotFound(f"subworkflow {name}@{version}: no workflow store to load it from")
        workflow, content_hash = await self.env.load_subworkflow(name, version)
        return await self.compile(workflow, content_hash, version=version, nested=True)


__all__ = [
    "CompiledWorkflow",
    "Compiler",
    "branch_node",
    "build_single_node",
    "items_node",
    "join_node",
    "mermaid",
]
