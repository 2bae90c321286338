"""Fan-out and join, maps, approvals, waits, subworkflows, cancel, pause and step mode."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine_support import event_types, open_engine, run_definition, yaml
from trellis.compiler._builder import GraphBuilder, OneStep
from trellis.compiler._state import field_reducers, state_type
from trellis.dsl.validator import load_workflow
from trellis.errors import Conflict, ValidationError
from trellis.nodes._env import BuildEnv
from trellis.nodes.fanout import delta
from trellis.registry import Registry
from trellis.types import NodeStatus, RunStatus


async def _no_children(name: str, version: int) -> Any:
    raise AssertionError(f"no subworkflow expected, asked for {name}@{version}")


@pytest.fixture
def tools() -> Registry:
    registry = Registry()
    registry.concurrent = 0  # type: ignore[attr-defined]
    registry.peak = 0  # type: ignore[attr-defined]
    registry.calls = []  # type: ignore[attr-defined]

    @registry.tool("sleep")
    async def sleep(seconds: float, value: Any = None) -> Any:
        registry.calls.append(value)  # type: ignore[attr-defined]
        registry.concurrent += 1  # type: ignore[attr-defined]
        registry.peak = max(registry.peak, registry.concurrent)  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(seconds)
        finally:
            registry.concurrent -= 1  # type: ignore[attr-defined]
        return value

    @registry.tool("explode")
    def explode() -> None:
        raise ValueError("boom")

    return registry


class TestParallel:
    async def test_one_step_branches_keep_no_checkpoints_of_their_own(
        self, tmp_path: Path, tools: Registry
    ) -> None:
        """A branch of one node that cannot park runs without a checkpointer of its own (its
        runner's pending write in the parent keeps its result); a longer branch checkpoints."""
        async with open_engine(f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}", tools) as engine:
            run = await run_definition(
                engine,
                """
                name: fan
                state: {log: {reducer: append}}
                start: fan
                nodes:
                  fan:
                    type: parallel
                    branches:
                      one: [{type: tool, tool: sleep, args: {seconds: 0, value: '"one"'}, output: {log: '[result]'}}]
                      two:
                        - {type: tool, tool: sleep, args: {seconds: 0, value: '"a"'}, output: {log: '[result]'}}
                        - {type: tool, tool: sleep, args: {seconds: 0, value: '"b"'}, output: {log: '[result]'}}
                """,
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert sorted(run.output["log"]) == ["a", "b", "one"]
        with sqlite3.connect(tmp_path / "trellis.checkpoints.db") as conn:
            namespaces = {ns.split(":")[0] for (ns,) in conn.execute("SELECT checkpoint_ns FROM checkpoints")}
        assert namespaces == {"", "fan__branch__two"}

    @pytest.mark.parametrize(
        "state",
        [
            {"log": ["x"], "facts": {"a": 1, "b": 2}, "last": "old", "same": 5},
            {},
        ],
        ids=["fields-set", "fields-unset"],
    )
    async def test_a_one_step_body_called_directly_changes_what_its_subgraph_would(
        self, tools: Registry, state: dict[str, Any]
    ) -> None:
        """A one-step body runs as a direct call of its node, not as a subgraph: for the same
        state, both give the runner the same delta (reducers, first writes, a caught error)."""
        workflow = load_workflow(
            yaml(
                """
                name: same-delta
                state: {log: {reducer: append}, facts: {reducer: merge}, last: {}, same: {}}
                start: fan
                nodes:
                  fan:
                    type: parallel
                    branches:
                      sets:
                        - type: set
                          values: {log: '"one"', facts: '{"b": 2, "c": 3}', last: '"new"', same: '5'}
                      caught:
                        - type: tool
                          tool: explode
                          catch: [{errors: ["*"], output: {log: '["caught"]', facts: '{"err": error.error}'}}]
                """
            )
        )
        reducers = field_reducers(workflow)
        builder = GraphBuilder(
            workflow=workflow,
            env=BuildEnv(registry=tools),
            state_cls=state_type("same_delta_state", reducers),
            reducers=reducers,
            load_child=_no_children,
        )
        for branch in ("sets", "caught"):
            scope = f"fan/{branch}"
            fields = sorted(builder._fields_written_in(scope))
            direct = await builder._body_graph(scope, fields)
            assert isinstance(direct, OneStep)
            subgraph = (await builder._scope_graph(scope, builder.scopes[scope][0].id, fields)).compile()
            expected = delta(state, await subgraph.ainvoke(dict(state), {}), reducers)
            assert delta(state, await direct.ainvoke(dict(state), {}), reducers) == expected
            assert expected, "the body changes something"

    async def test_branches_run_concurrently_and_the_join_runs_once_after_all(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            started = time.monotonic()
            run = await run_definition(
                engine,
                """
                name: fan
                state: {log: {reducer: append}, joined: {type: integer}}
                start: fan
                nodes:
                  fan:
                    type: parallel
                    branches:
                      slow: [{type: tool, tool: sleep, args: {seconds: 0.3, value: '"slow"'}, output: {log: '[result]'}}]
                      fast: [{type: tool, tool: sleep, args: {seconds: 0.1, value: '"fast"'}, output: {log: '[result]'}}]
                    next: join
                  join: {type: set, values: {joined: 'size(state.log)'}}
                """,
            )
            elapsed = time.monotonic() - started
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert sorted(run.output["log"]) == ["fast", "slow"]
            assert run.output["joined"] == 2
            assert elapsed < 0.6
            types = await event_types(engine, run.id)
            assert types.count("node.started:join") == 1

    async def test_regression_trap_1_a_failed_and_handled_branch_does_not_starve_the_join(
        self, database_url: str, tools: Registry
    ) -> None:
        """In a flat LangGraph graph the join silently never runs; here it runs exactly once."""
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: trap-one
                state: {evidence: {reducer: append}, drafted: {type: boolean}}
                start: gather
                nodes:
                  gather:
                    type: parallel
                    branches:
                      kb: [{type: tool, tool: sleep, args: {seconds: 0.05, value: '"kb"'}, output: {evidence: '[result]'}}]
                      orders:
                        - type: tool
                          tool: explode
                          catch: [{errors: [ToolError], output: {evidence: '["order history unavailable"]'}}]
                    next: draft
                  draft: {type: set, values: {drafted: true}}
                """,
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["drafted"] is True
            assert sorted(run.output["evidence"]) == ["kb", "order history unavailable"]

    async def test_regression_trap_2_append_fields_written_in_branches_do_not_double(
        self, database_url: str, tools: Registry
    ) -> None:
        """A branch subgraph returning its whole state would append the inherited entries again."""
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: trap-two
                state: {log: {reducer: append}}
                start: first
                nodes:
                  first: {type: set, values: {log: '["fanout"]'}, next: fan}
                  fan:
                    type: parallel
                    branches:
                      a:
                        - {type: set, values: {log: '["a1"]'}}
                        - {type: set, values: {log: '["a2"]'}}
                      b: [{type: set, values: {log: '["b"]'}}]
                    next: last
                  last: {type: set, values: {log: '["draft"]'}}
                """,
            )
            log = run.output["log"]
            assert log[0] == "fanout"
            assert log[-1] == "draft"
            assert sorted(log[1:-1]) == ["a1", "a2", "b"]
            assert len(log) == 5

    async def test_routes_into_a_parallel_node_start_its_branches_and_each_visit_starts_afresh(
        self, database_url: str, tools: Registry
    ) -> None:
        """A parallel node has no node of its own: a router, a node's ``next`` and a ``catch``
        each start its branches directly. A second visit neither keeps the failure of a branch
        that failed the first time nor announces the node more than once."""
        calls = {"flaky": 0}

        @tools.tool("first_fails")
        def first_fails() -> str:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise ValueError("first call fails")
            return "ok"

        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: revisit
                state: {visits: {type: integer}, summaries: {reducer: append}, routed: {type: boolean}}
                start: bump
                nodes:
                  bump: {type: set, values: {visits: 'state.visits + 1'}, next: fan}
                  fan:
                    type: parallel
                    min_success: 1
                    branches:
                      steady: [{type: tool, tool: sleep, args: {seconds: 0}}]
                      flaky: [{type: tool, tool: first_fails}]
                    output: {summaries: '[result]'}
                    next: again
                  again:
                    type: router
                    routes: [{when: 'state.visits < 2', next: bump}, {when: 'state.visits == 2', next: mark}]
                    default: boom
                  mark: {type: set, values: {routed: true, visits: 3}, next: fan}
                  boom: {type: tool, tool: explode, catch: [{errors: ['*'], next: fan_last}]}
                  fan_last:
                    type: parallel
                    branches:
                      only: [{type: tool, tool: sleep, args: {seconds: 0}}]
                """,
                {"visits": 0},
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            first, second, third = run.output["summaries"]
            assert first == {"succeeded": ["steady"], "failed": {"flaky": first["failed"]["flaky"]}}
            assert first["failed"]["flaky"]["error"] == "ToolError"
            for later in (second, third):
                assert sorted(later["succeeded"]) == ["flaky", "steady"]
                assert later["failed"] == {}
            types = await event_types(engine, run.id)
            assert types.count("node.started:fan") == 3
            assert types.count("node.succeeded:fan") == 3
            assert types.count("node.started:fan_last") == 1
            assert types.index("node.failed:boom") < types.index("node.started:fan_last")
            assert types.index("node.started:fan") < types.index("node.started:fan_steady_0")

    async def test_min_success_tolerates_failed_branches_and_reports_them(
        self, database_url: str, tools: Registry
    ) -> None:
        definition = """
            name: tolerant
            state: {{summary: {{}}}}
            start: fan
            nodes:
              fan:
                type: parallel
                min_success: {need}
                branches:
                  a: [{{type: tool, tool: sleep, args: {{seconds: 0}}}}]
                  b: [{{type: tool, tool: sleep, args: {{seconds: 0}}}}]
                  c: [{{type: tool, tool: explode}}]
                output: {{summary: result}}
            """
        async with open_engine(database_url, tools) as engine:
            ok = await run_definition(engine, definition.format(need=2))
            assert ok.status == RunStatus.SUCCEEDED, ok.error
            assert ok.output["summary"]["succeeded"] == ["a", "b"]
            assert ok.output["summary"]["failed"]["c"]["error"] == "ToolError"
            strict = await run_definition(engine, definition.format(need=3).replace("tolerant", "strict"))
            assert strict.status == RunStatus.FAILED
            assert strict.error is not None
            assert strict.error["error"] == "ToolError"
            assert "1 of 3 branches failed" in strict.error["detail"]


class TestMap:
    async def test_map_collects_results_in_item_order_and_honours_max_concurrency(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: mapper
                state: {xs: {type: array}, out: {type: array}}
                start: each
                nodes:
                  each:
                    type: map
                    items: state.xs
                    max_concurrency: 2
                    do:
                      - {type: tool, tool: sleep, args: {seconds: '0.05 * double(5 - index)', value: 'item * 10'}}
                    collect: out
                """,
                {"xs": [1, 2, 3, 4, 5]},
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["out"] == [10, 20, 30, 40, 50]
            assert tools.peak == 2  # type: ignore[attr-defined]
            states = {n.node for n in await engine.store.list_node_states(run.id)}
            assert {"each_0[0]", "each_0[4]"} <= states

    async def test_an_empty_list_skips_straight_to_the_collector(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: empty-map
                state: {out: {type: array}}
                start: each
                nodes:
                  each: {type: map, items: '[]', do: [{type: set, values: {}}], collect: out}
                """,
            )
            assert run.output == {"out": []}

    async def test_a_failed_item_fails_the_map_with_its_error(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: failing-map
                start: each
                nodes:
                  each:
                    type: map
                    items: '[1, 2]'
                    do: [{type: router, routes: [{when: 'item == 2', next: bad}], default: fine}, {id: fine, type: end}, {id: bad, type: tool, tool: explode}]
                """,
            )
            assert run.status == RunStatus.FAILED
            assert run.error is not None
            assert run.error["error"] == "ToolError"
            assert "1 of 2 items failed" in run.error["detail"]


APPROVAL = """
    name: gated
    state: {amount: {type: number}, decision: {}, done: {type: boolean}}
    start: approve
    nodes:
      approve:
        type: approval
        title: "Refund {{ state.amount }} EUR?"
        form: {type: object, properties: {note: {type: string}}}
        on_reject: continue
        timeout: {after: 1h, next: expired}
        output: {decision: result}
        next: finish
      finish: {type: set, values: {done: true}}
      expired: {type: set, values: {done: false}}
    """


class TestApproval:
    async def test_an_approval_parks_survives_a_restart_and_resumes_with_the_decision(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            parked = await run_definition(engine, APPROVAL, {"amount": 120})
            assert parked.status == RunStatus.WAITING
            assert parked.parked is not None
            gate = parked.parked["interrupts"][0]
            assert (gate["kind"], gate["node"], gate["title"]) == ("approval", "approve", "Refund 120 EUR?")
            assert parked.wake_at is not None
        # a new process: nothing of the first engine is left but the database
        async with open_engine(database_url, tools) as engine:
            with pytest.raises(ValidationError, match="note"):
                await engine.decide(parked.id, approved=True, actor="ada", data={"note": 5})
            queued = await engine.decide(
                parked.id, approved=True, actor="ada", comment="fine", data={"note": "ok"}
            )
            assert queued.status == RunStatus.QUEUED
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            decision = run.output["decision"]
            assert (decision["approved"], decision["by"], decision["comment"]) == (True, "ada", "fine")
            assert decision["data"] == {"note": "ok"}
            assert decision["decided_at"]
            assert run.output["done"] is True
            types = await event_types(engine, run.id)
            assert types.count("node.started:approve") == 1
            assert "run.waiting:approve" in types
            assert "run.resumed" in types

    async def test_approving_a_run_that_is_not_waiting_is_a_conflict_that_says_why(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine, "name: quick\nstart: s\nnodes:\n  s: {type: set, values: {a: 1}}\n"
            )
            with pytest.raises(Conflict, match="succeeded and not waiting for an approval"):
                await engine.decide(run.id, approved=True, actor="ada")

    async def test_a_rejection_fails_the_run_unless_on_reject_continue(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            strict = await run_definition(
                engine, APPROVAL.replace("on_reject: continue", "on_reject: fail"), {"amount": 10}
            )
            await engine.decide(strict.id, approved=False, actor="bob", comment="too much")
            failed = await engine.execute(strict.id)
            assert failed.status == RunStatus.FAILED
            assert failed.error is not None
            assert failed.error["error"] == "ApprovalRejected"
            assert "bob" in failed.error["detail"]
            assert "too much" in failed.error["detail"]

            lenient = await run_definition(engine, APPROVAL.replace("gated", "gated-lenient"), {"amount": 10})
            await engine.decide(lenient.id, approved=False, actor="bob")
            done = await engine.execute(lenient.id)
            assert done.status == RunStatus.SUCCEEDED
            assert done.output["decision"]["approved"] is False

    async def test_an_expired_approval_takes_its_timeout_route(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            parked = await run_definition(
                engine, APPROVAL.replace("after: 1h", "after: 100ms"), {"amount": 5}
            )
            assert parked.status == RunStatus.WAITING
            with pytest.raises(Conflict, match="approval of node 'approve'"):
                await engine.execute(parked.id)
            await asyncio.sleep(0.15)
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["done"] is False
            assert run.output["decision"]["timed_out"] is True
            assert run.output["decision"]["approved"] is False


class TestWaitAndSubworkflow:
    async def test_a_wait_node_parks_and_the_timer_resumes_it(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            started = time.monotonic()
            run = await run_definition(
                engine,
                """
                name: waits
                state: {after: {type: boolean}}
                start: pause
                nodes:
                  pause: {type: wait, for: 300ms, next: after}
                  after: {type: set, values: {after: true}}
                """,
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert time.monotonic() - started >= 0.29
            types = await event_types(engine, run.id)
            assert "run.waiting:pause" in types

    async def test_a_subworkflow_runs_a_pinned_version_with_its_own_input(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            child = await engine.register(
                yaml(
                    """
                    name: child
                    state: {n: {type: integer}, sq: {type: integer}}
                    output: {square: state.sq}
                    start: sq
                    nodes:
                      sq: {type: set, values: {sq: 'state.n * state.n'}}
                    """
                )
            )
            run = await run_definition(
                engine,
                f"""
                name: parent
                state: {{x: {{type: integer}}, y: {{type: integer}}}}
                start: call
                nodes:
                  call: {{type: subworkflow, workflow: "child@{child.version}", input: {{n: 'state.x + 1'}}, output: {{y: result.square}}}}
                """,
                {"x": 6},
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["y"] == 49
            states = {n.node for n in await engine.store.list_node_states(run.id)}
            assert "call/sq" in states


SLOW = """
    name: slow-chain
    state: {n: {type: integer}}
    start: a
    nodes:
      a: {type: tool, tool: sleep, args: {seconds: 0.2, value: 1}, output: {n: result}, next: b}
      b: {type: tool, tool: sleep, args: {seconds: 0.2, value: 2}, output: {n: result}, next: c}
      c: {type: tool, tool: sleep, args: {seconds: 0.2, value: 3}, output: {n: result}}
    """


class TestCancelPauseStep:
    async def test_cancel_stops_a_running_run_and_its_running_node_ends_cancelled(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            record = await engine.register(yaml(SLOW))
            run = await engine.submit(record.name)
            async with engine.bus.subscribe(run.id) as events:
                task = asyncio.create_task(engine.execute(run.id))
                while (event := await events.get()) is not None and (event.type, event.node) != (
                    "node.started",
                    "b",
                ):
                    pass
            await engine.cancel(run.id, actor="ops")
            done = await task
            assert done.status == RunStatus.CANCELLED
            states = {n.node: n.status for n in await engine.store.list_node_states(run.id)}
            assert states == {"a": NodeStatus.SUCCEEDED, "b": NodeStatus.CANCELLED}
            last = (await engine.store.list_events(run.id))[-1]
            assert last.type == "run.cancelled"
            assert last.data == {"by": "ops", "nodes": ["b"]}

    async def test_cancel_from_another_process_reaches_the_run_through_the_store(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine, open_engine(database_url, tools) as other:
            record = await engine.register(yaml(SLOW))
            run = await engine.submit(record.name)
            task = asyncio.create_task(engine.execute(run.id))
            await asyncio.sleep(0.1)
            await other.cancel(run.id, actor="elsewhere")
            done = await task
            assert done.status == RunStatus.CANCELLED

    async def test_pause_stops_at_the_next_step_boundary_and_resume_finishes(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            record = await engine.register(yaml(SLOW))
            run = await engine.submit(record.name)
            task = asyncio.create_task(engine.execute(run.id))
            async with engine.bus.subscribe(run.id) as events:
                while (await events.get()).type != "node.started":  # type: ignore[union-attr]
                    pass  # pause while node a runs: it finishes, b does not start
            await engine.pause(run.id)
            paused = await task
            assert paused.status == RunStatus.PAUSED
            states = {n.node: n.status for n in await engine.store.list_node_states(run.id)}
            assert states == {"a": NodeStatus.SUCCEEDED}
            await engine.resume(run.id)
            done = await engine.execute(run.id)
            assert done.status == RunStatus.SUCCEEDED
            assert done.output == {"n": 3}
            assert tools.calls == [1, 2, 3]  # type: ignore[attr-defined]

    async def test_step_mode_parks_before_every_node(self, database_url: str, tools: Registry) -> None:
        async with open_engine(database_url, tools) as engine:
            record = await engine.register(yaml(SLOW.replace("0.2", "0")))
            run = await engine.submit(record.name, options={"step": True})
            seen = []
            for _ in range(10):
                run = await engine.execute(run.id)
                if run.status != RunStatus.PAUSED:
                    break
                assert run.parked is not None
                seen.append(run.parked["next"])
                await engine.resume(run.id)
            assert run.status == RunStatus.SUCCEEDED
            assert seen == [["a"], ["b"], ["c"]]
