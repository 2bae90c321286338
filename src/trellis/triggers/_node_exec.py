"""Single-node execution: run one node of a workflow on a given state, outside any run.

For debugging a node without running the graph: the node is built exactly as a run builds it
(:func:`trellis.compiler.build_single_node`) and called once with the state given, with
stand-alone services (no store, no checkpoint, no events recorded anywhere). The answer says
what it would have written (``update``), where the run would have gone (``next``), the error
if it failed, how long it took, and the events it emitted.

Side effects are real: a ``tool``, ``http``, ``agent`` or ``llm`` node calls what it calls.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph.errors import GraphInterrupt
from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Send

from trellis.compiler import CompiledWorkflow, build_single_node
from trellis.dsl import Workflow
from trellis.errors import NotFound, ValidationError, as_workflow_error
from trellis.nodes._channels import PRIVATE_PREFIX
from trellis.nodes._context import EVENT_MARKER, SERVICES_KEY, StandaloneServices
from trellis.runtime import Engine


async def execute_node(
    engine: Engine,
    workflow: str,
    node: str,
    state: Mapping[str, Any],
    *,
    run_input: Any = None,
    retries: bool = False,
) -> dict[str, Any]:
    """Execute ``node`` of ``workflow`` (``name`` or ``name@version``) once on ``state``.

    Args:
        state: the state the node sees (its public fields; missing ones are absent).
        run_input: bound as ``input`` in the node's expressions (default: ``state``).
        retries: apply the node's retry policy (default: one attempt).

    Returns:
        ``{workflow, version, node, type, status, update, next, error, duration_ms, events, logs}``:
        ``status`` is ``succeeded``, ``failed`` or ``interrupted``; ``next`` lists the nodes
        the run would continue with (empty when it would end there).

    Raises:
        NotFound: unknown workflow or node.
        ValidationError: a Python workflow, or a node type that cannot run alone.
    """
    record = await engine.resolve(workflow)
    if record.definition is None:
        raise ValidationError(
            f"workflow {record.name!r} is a Python workflow; only nodes of definitions can be executed alone"
        )
    definition = Workflow.model_validate(record.definition)

    async def load_child(name: str, version: int) -> CompiledWorkflow:
        child = await engine.store.get_workflow(name, version)
        if child is None or child.definition is None:
            raise NotFound(f"subworkflow {name}@{version} is not registered")
        return await engine.compiler.compile(
            Workflow.model_validate(child.definition), child.hash, version=version, nested=True
        )

    function = await build_single_node(
        definition, node, env=engine.env, load_child=load_child, retries=retries
    )
    chunks: list[dict[str, Any]] = []
    services = StandaloneServices(
        run_id=f"node-exec-{uuid.uuid4().hex[:12]}", run_input=dict(state) if run_input is None else run_input
    )
    config: RunnableConfig = {
        "configurable": {SERVICES_KEY: services, CONFIG_KEY_RUNTIME: Runtime(stream_writer=chunks.append)}
    }
    result: dict[str, Any] = {
        "workflow": record.name,
        "version": record.version,
        "node": node,
        "type": function.plan.type,
        "status": "succeeded",
        "update": None,
        "next": [],
        "error": None,
    }
    token = var_child_runnable_config.set(config)
    started = time.monotonic()
    try:
        command = await function(dict(state), config)
    except GraphInterrupt as interrupt:
        result["status"] = "interrupted"
        result["error"] = {"title": "the node asked to interrupt the run", "detail": str(interrupt)}
    except Exception as exc:
        result["status"] = "failed"
        result["error"] = as_workflow_error(exc, node=node).to_problem()
    else:
        update = command.update if isinstance(command.update, Mapping) else {}
        result["update"] = {k: v for k, v in update.items() if not k.startswith(PRIVATE_PREFIX)}
        result["next"] = _targets(command.goto)
    finally:
        var_child_runnable_config.reset(token)
    result["duration_ms"] = (time.monotonic() - started) * 1000
    result["events"] = [
        {"type": c[EVENT_MARKER], "node": c.get("node"), "attempt": c.get("attempt"), "data": c.get("data")}
        for c in chunks
        if isinstance(c, dict) and EVENT_MARKER in c
    ]
    result["logs"] = list(getattr(services, "logs", []))
    return result


def _targets(goto: Any) -> list[Any]:
    items: Sequence[Any] = goto if isinstance(goto, list | tuple) else [goto]
    targets: list[Any] = []
    for item in items:
        if isinstance(item, Send):
            targets.append({"node": item.node, "arg": item.arg})
        elif item and item != END:
            targets.append(item)
    return targets
