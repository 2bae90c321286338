"""The node wrapper: one LangGraph node function per definition node.

It owns what every node type shares: bindings, the attempt loop (retries with full jitter,
durable attempt numbers, ``node.retrying`` events), per-attempt ``run`` and ``idle``
timeouts (cooperative asyncio cancellation, as LangGraph's ``TimeoutPolicy`` does, but
applied per attempt so a backoff wait never counts against the node's time), the ``output``
mapping, routing with ``Command(goto=...)``, and the ``catch`` handler registered with
LangGraph's ``error_handler=``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp, NodeError
from langgraph.graph import END
from langgraph.types import Command, Send

from trellis.errors import TimeoutExceeded, as_workflow_error, error_name
from trellis.expressions import evaluate_map
from trellis.nodes._channels import ERROR_KEY, INDEX_KEY, ITEM_KEY, PRIVATE_PREFIX, RESULT_KEY
from trellis.nodes._context import NodeContext, emit, services_of
from trellis.nodes._logs import node_scope
from trellis.nodes._retry import RetryPlan


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a node body produced."""

    result: Any = None
    """Bound as ``result`` in the node's ``output`` mapping."""
    goto: str | Sequence[str | Send] | None = None
    """Overrides the node's successor (routers, approval timeouts, fan-outs)."""
    update: Mapping[str, Any] | None = None
    """State updates made by the node type itself (``set``, map/parallel joins)."""


Body = Callable[[NodeContext], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class CatchPlan:
    errors: frozenset[str]
    goto: str
    output: Mapping[str, Any] | None

    def matches(self, error: BaseException) -> bool:
        return "*" in self.errors or error_name(error) in self.errors


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Everything the wrapper needs about one node, resolved at compile time."""

    id: str
    type: str
    next: str = END
    """LangGraph name of the successor (``END`` closes the enclosing graph)."""
    retry: RetryPlan = field(default_factory=RetryPlan)
    run_timeout: float | None = None
    idle_timeout: float | None = None
    output: Mapping[str, Any] | None = None
    catches: tuple[CatchPlan, ...] = ()
    retryable: bool = True
    """False for node types that must run exactly once per visit (approval, wait, joins)."""
    announce_start: bool = True
    """Emit ``node.started`` (a join node continues its fan-out's node and does not)."""
    announce_success: bool = True
    """Emit ``node.succeeded`` (a fan-out node leaves that to its join)."""
    record_result: bool = False
    """Write ``result`` to the private result channel (nodes inside a map body: the item's result)."""
    retry_lookup: Callable[[], Awaitable[RetryPlan | None]] | None = None
    """Finds the retry policy at run time (an ``agent`` node without its own: the agent's),
    falling back to ``retry`` when it returns ``None``."""
    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """LangGraph nodes that stand for a definition node a route names: a ``parallel`` node is
    entered by starting its branch runners, as it has no node of its own to go to."""

    def catch_for(self, error: BaseException) -> CatchPlan | None:
        return next((c for c in self.catches if c.matches(error)), None)

    def route(self, goto: str | Sequence[str | Send]) -> str | Sequence[str | Send]:
        """``goto`` (a definition node's id, ``END``, or what a fan-out sends) as LangGraph nodes."""
        return self.routes.get(goto, goto) if isinstance(goto, str) else goto


def public_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state as expressions see it: private channels removed."""
    return {k: v for k, v in state.items() if not k.startswith(PRIVATE_PREFIX)}


def bindings_for(state: Mapping[str, Any], run_input: Any) -> dict[str, Any]:
    """Variables bound for expressions evaluated against ``state``."""
    bound: dict[str, Any] = {"state": public_state(state), "input": run_input, "error": state.get(ERROR_KEY)}
    if ITEM_KEY in state:
        bound["item"] = state[ITEM_KEY]
        bound["index"] = state.get(INDEX_KEY)
    return bound


def node_key(plan_id: str, state: Mapping[str, Any]) -> str:
    """The key a node's state and events are recorded under (``id[index]`` in a map body)."""
    index = state.get(INDEX_KEY)
    return plan_id if index is None else f"{plan_id}[{index}]"


def make_node(plan: NodePlan, body: Body) -> WrappedNode:
    """Wrap ``body`` into a LangGraph node that routes with ``Command``."""
    return WrappedNode(plan, body)


class WrappedNode:
    """A definition node as LangGraph sees it: ``await node(state, config) -> Command``.

    A callable object rather than a closure: LangGraph disassembles a node *function* (its
    closure and bytecode) looking for subgraphs it calls, which costs ~1.4 ms per node for a
    function this size. Nodes that call subgraphs (the fan-out runners) stay plain closures.
    """

    def __init__(self, plan: NodePlan, body: Body) -> None:
        self.plan = plan
        self.body = body
        self.__name__ = f"node_{plan.id}"

    def __repr__(self) -> str:
        return f"WrappedNode(id={self.plan.id!r}, type={self.plan.type!r})"

    async def __call__(self, state: dict[str, Any], config: RunnableConfig) -> Command[Any]:
        plan, body = self.plan, self.body
        services = services_of(config)
        key = services.key_prefix + node_key(plan.id, state)
        bindings = bindings_for(state, services.run_input)
        done, due = services.prior_attempt(key)
        attempt = done + 1
        retry = plan.retry
        if plan.retry_lookup is not None and plan.retryable:
            retry = await plan.retry_lookup() or retry
        if due is not None:
            await asyncio.sleep(max(0.0, due - time.time()))
        while True:
            ctx = NodeContext(
                node=key, attempt=attempt, bindings=bindings, state=state, services=services, config=config
            )
            if plan.announce_start or attempt > done + 1:
                emit("node.started", key, attempt, type=plan.type)
            started = time.monotonic()
            # Services from outside the runtime may not keep logs: their lines are dropped.
            sink = getattr(services, "record_log", _drop_log)
            try:
                with node_scope(services.run_id, key, attempt, sink):
                    outcome = await _attempt(plan, body, ctx)
                update = dict(outcome.update or {})
                if plan.output:
                    update.update(evaluate_map(plan.output, {**bindings, "result": outcome.result}))
                if plan.record_result:
                    update[RESULT_KEY] = outcome.result
                if state.get(ERROR_KEY) is not None:
                    update[ERROR_KEY] = None  # the fallback consumed the error it was routed with
            except GraphBubbleUp:
                raise
            except Exception as exc:
                error = as_workflow_error(exc, node=key)
                duration_ms = (time.monotonic() - started) * 1000
                if plan.retryable and retry.should_retry(error, attempt):
                    delay = retry.delay(attempt, error)
                    emit(
                        "node.retrying",
                        key,
                        attempt,
                        delay=delay,
                        next_attempt=attempt + 1,
                        next_attempt_at=time.time() + delay,
                        error=error.to_problem(),
                        duration_ms=duration_ms,
                        **_usage(ctx),
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                catch = plan.catch_for(error)
                emit(
                    "node.failed",
                    key,
                    attempt,
                    error=error.to_problem(),
                    duration_ms=duration_ms,
                    caught_by=None if catch is None else catch.goto,
                    **_usage(ctx),
                )
                if error is exc:
                    raise
                raise error from exc
            if plan.announce_success:
                emit(
                    "node.succeeded",
                    key,
                    attempt,
                    duration_ms=(time.monotonic() - started) * 1000,
                    update={k: v for k, v in update.items() if not k.startswith(PRIVATE_PREFIX)},
                    **_usage(ctx),
                )
            goto = plan.next if outcome.goto is None else outcome.goto
            return Command(goto=plan.route(goto), update=update)


def _usage(ctx: NodeContext) -> dict[str, Any]:
    """``{"usage": {model, prompt_tokens, completion_tokens}}`` when the attempt called a model."""
    return {} if ctx.usage is None else {"usage": ctx.usage}


def _drop_log(line: dict[str, Any]) -> None:
    return None


async def _attempt(plan: NodePlan, body: Body, ctx: NodeContext) -> Outcome:
    """One attempt of ``body`` under the node's run and idle timeouts."""
    try:
        return await _timed(plan, body, ctx)
    except TimeoutExceeded as error:
        await ctx.settle(error)
        raise
    except asyncio.CancelledError:
        await asyncio.shield(ctx.settle(None))
        raise


async def _timed(plan: NodePlan, body: Body, ctx: NodeContext) -> Outcome:
    if plan.run_timeout is None and plan.idle_timeout is None:
        return await body(ctx)
    loop = asyncio.get_running_loop()
    idle = plan.idle_timeout
    run_cm = asyncio.timeout_at(None if plan.run_timeout is None else loop.time() + plan.run_timeout)
    idle_cm = asyncio.timeout_at(None if idle is None else loop.time() + idle)
    if idle is not None:
        ctx._on_heartbeat = lambda: idle_cm.reschedule(loop.time() + idle)
    try:
        async with run_cm, idle_cm:
            return await body(ctx)
    except TimeoutError:
        if not (run_cm.expired() or idle_cm.expired()):
            raise  # the body's own timeout, not ours
        kind = "idle" if idle_cm.expired() else "run"
        limit = idle if kind == "idle" else plan.run_timeout
        raise TimeoutExceeded(
            f"node {ctx.node!r} exceeded its {kind} timeout of {limit:g}s (attempt {ctx.attempt})",
            node=ctx.node,
            details={"kind": kind, "seconds": limit},
        ) from None


def make_error_handler(
    plan: NodePlan,
) -> Callable[[dict[str, Any], NodeError, RunnableConfig], Command[Any]]:
    """LangGraph ``error_handler`` applying the node's ``catch`` list after retries ran out."""

    def handler(state: dict[str, Any], error: NodeError, config: RunnableConfig) -> Command[Any]:
        exc = error.error
        catch = plan.catch_for(exc)
        if catch is None:
            raise exc
        services = services_of(config)
        key = services.key_prefix + node_key(plan.id, state)
        problem = as_workflow_error(exc, node=key).to_problem()
        update: dict[str, Any] = {}
        if catch.output:
            update = evaluate_map(catch.output, {**bindings_for(state, services.run_input), "error": problem})
        if catch.goto != plan.next:
            update[ERROR_KEY] = problem  # a fallback node sees what went wrong as `error`
        return Command(goto=plan.route(catch.goto), update=update)

    handler.__name__ = f"catch_{plan.id}"
    return handler
