"""Agents end to end: the registry on the call path, breakers with fallbacks, response schemas,
preflight, health monitoring, and the agent's retry policy. Real engine, real loopback agents,
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine_support import event_types, open_engine, run_definition
from trellis.agents import HealthMonitor
from trellis.errors import Conflict, ValidationError
from trellis.runtime import Engine
from trellis.testing import AgentServer, Behaviour

FALLBACK_FLOW = """
name: guarded
state: {text: {type: string}, entities: {type: array}, by: {type: string}}
start: analyse
nodes:
  analyse:
    type: agent
    agent: nlp
    input: {text: state.text}
    output: {entities: result.entities, by: '"agent"'}
    catch: [{errors: ["*"], next: fallback}]
  fallback:
    type: set
    values: {entities: '[]', by: '"fallback:" + error.error'}
"""


def invocations(agents: AgentServer, name: str) -> int:
    return agents[name].count  # health checks are not counted


async def register(engine: Engine, agents: AgentServer, name: str = "nlp", **spec: Any) -> None:
    await engine.register_agent(name, {"base_url": agents.url(name), **spec})


async def run_guarded(engine: Engine, text: str = "refund please") -> Any:
    return await run_definition(engine, FALLBACK_FLOW, {"text": text})


class TestRegistryOnTheCallPath:
    async def test_a_registered_agent_is_used_by_name_and_changes_apply_without_restart(
        self, database_url: str
    ) -> None:
        agents_ = {"nlp": Behaviour(reply={"entities": ["a"]}), "nlp2": Behaviour(reply={"entities": ["b"]})}
        with AgentServer(agents=agents_) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents)
                run = await run_guarded(engine)
                assert (run.output["by"], run.output["entities"]) == ("agent", ["a"])
                await engine.update_agent("nlp", {"base_url": agents.url("nlp2")})
                run = await run_guarded(engine)
                assert run.output["entities"] == ["b"]
                assert (invocations(agents, "nlp"), invocations(agents, "nlp2")) == (1, 1)

    async def test_a_disabled_agent_is_unavailable_and_the_catch_takes_over(self, database_url: str) -> None:
        with AgentServer(agents=["nlp"]) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents)
                await engine.set_agent_enabled("nlp", False)
                run = await run_guarded(engine)
                assert run.output["by"] == "fallback:AgentUnavailable"
                assert invocations(agents, "nlp") == 0

    async def test_invalid_specs_and_clear_secrets_are_refused_with_the_field(
        self, database_url: str
    ) -> None:
        async with open_engine(database_url) as engine:
            with pytest.raises(ValidationError) as bad:
                await engine.register_agent("nlp", {"base_url": "ftp://x"})
            assert bad.value.details["path"] == "/base_url"
            with pytest.raises(ValidationError) as clear:
                await engine.register_agent(
                    "nlp", {"base_url": "http://127.0.0.1:1", "auth": {"secret": "hunter2"}}
                )
            assert clear.value.details["path"] == "/auth/secret"
            assert "never stored" in clear.value.message
            await engine.register_agent("nlp", {"base_url": "http://127.0.0.1:1"})
            with pytest.raises(Conflict):
                await engine.register_agent("nlp", {"base_url": "http://127.0.0.1:2"})

    async def test_updates_are_merge_patches_and_concurrent_ones_all_apply(self, database_url: str) -> None:
        async with open_engine(database_url) as engine:
            breaker = {"failure_threshold": 7, "recovery_seconds": 90}
            await engine.register_agent("nlp", {"base_url": "http://127.0.0.1:1", "breaker": breaker})
            await engine.update_agent("nlp", {"breaker": {"failure_threshold": 2}, "description": "x"})
            spec = (await engine.get_agent("nlp")).spec
            assert (spec["breaker"]["failure_threshold"], spec["breaker"]["recovery_seconds"]) == (2, 90)
            await engine.update_agent("nlp", {"description": None})  # null removes: back to the default
            assert (await engine.get_agent("nlp")).spec["description"] is None
            changes = [{"timeout_seconds": 5}, {"invoke_path": "/run"}, {"health_path": "/ready"}]
            await asyncio.gather(*(engine.update_agent("nlp", c) for c in changes))
            record = await engine.get_agent("nlp")
            assert (
                record.spec["timeout_seconds"],
                record.spec["invoke_path"],
                record.spec["health_path"],
            ) == (
                5,
                "/run",
                "/ready",
            )
            assert record.revision == 6

    async def test_concurrent_registrations_of_one_name_leave_one_and_conflict_the_others(
        self, database_url: str
    ) -> None:
        async with open_engine(database_url) as first, open_engine(database_url) as second:
            outcomes = await asyncio.gather(
                *(
                    engine.register_agent("nlp", {"base_url": f"http://127.0.0.1:{port}"})
                    for port, engine in ((1, first), (2, second), (3, first), (4, second))
                ),
                return_exceptions=True,
            )
            assert sum(1 for o in outcomes if isinstance(o, Conflict)) == 3, outcomes
            assert len(await first.store.list_agents()) == 1

    async def test_the_auth_header_comes_from_the_referenced_secret(
        self, database_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NLP_TOKEN", "s3cret")
        with AgentServer(agents={"nlp": Behaviour(reply={"entities": []})}) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, auth={"secret": "env:NLP_TOKEN"})
                stored = await engine.get_agent("nlp")
                assert "s3cret" not in repr(stored.to_dict())
                await run_guarded(engine)
                assert agents["nlp"].calls[-1].headers["authorization"] == "Bearer s3cret"


class TestBreakersInRuns:
    async def test_an_open_circuit_sends_runs_to_their_fallback_without_calling_the_agent(
        self, database_url: str
    ) -> None:
        with AgentServer(agents={"nlp": Behaviour(status=503)}) as agents:
            async with open_engine(database_url) as engine:
                breaker = {"failure_threshold": 2, "window_seconds": 60, "recovery_seconds": 0.3}
                await register(engine, agents, breaker=breaker)
                first = await run_guarded(engine)
                second = await run_guarded(engine)
                assert first.output["by"] == second.output["by"] == "fallback:HttpError"
                assert "breaker.opened:analyse" in await event_types(engine, second.id)
                third = await run_guarded(engine)
                assert third.output["by"] == "fallback:CircuitOpen"
                assert invocations(agents, "nlp") == 2  # the open circuit refused without a call
                # recovery: the agent is back, the trial call after the timeout closes the circuit
                agents["nlp"].set(status=None, reply={"entities": ["x"]})
                await asyncio.sleep(0.35)
                fourth = await run_guarded(engine)
                assert fourth.output["by"] == "agent"
                types = await event_types(engine, fourth.id)
                assert "breaker.half_open:analyse" in types
                assert "breaker.closed:analyse" in types
                breaker_row = await engine.store.get_breaker("agent:nlp")
                assert breaker_row is not None
                assert breaker_row.state == "closed"

    async def test_a_node_timeout_on_a_hanging_agent_counts_against_its_breaker(
        self, database_url: str
    ) -> None:
        flow = FALLBACK_FLOW.replace("    agent: nlp\n", "    agent: nlp\n    timeout: {run: 0.2}\n")
        with AgentServer(agents={"nlp": Behaviour(hang=True)}) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, breaker={"failure_threshold": 1, "recovery_seconds": 60})
                first = await run_definition(engine, flow, {"text": "x"})
                assert first.output["by"] == "fallback:Timeout"
                second = await run_definition(engine, flow, {"text": "x"})
                assert second.output["by"] == "fallback:CircuitOpen"
                assert invocations(agents, "nlp") == 1
                agents["nlp"].set(hang=False)

    async def test_http_nodes_get_one_circuit_per_host(self, database_url: str) -> None:
        flow = """
        name: http-guarded
        state: {url: {type: string}, status: {type: string}}
        start: call
        nodes:
          call:
            type: http
            url: "{{ state.url }}"
            output: {status: '"ok"'}
            catch: [{errors: ["*"], output: {status: error.error}}]
        """
        with AgentServer(agents={"svc": Behaviour(status=500)}) as agents:
            async with open_engine(database_url) as engine:
                statuses = [
                    (await run_definition(engine, flow, {"url": agents.url("svc", "/x")})).output["status"]
                    for _ in range(6)
                ]
                assert statuses == ["HttpError"] * 5 + ["CircuitOpen"]  # default: 5 failures open it
                host = agents.origin.split("://", 1)[1]
                assert (await engine.store.get_breaker(f"http:{host}")).state == "open"  # type: ignore[union-attr]


class TestResponsesAndRetries:
    async def test_an_answer_not_matching_the_response_schema_names_the_failing_path(
        self, database_url: str
    ) -> None:
        schema = {
            "type": "object",
            "required": ["entities"],
            "properties": {"entities": {"type": "array", "items": {"type": "string"}}},
        }
        with AgentServer(agents={"nlp": Behaviour(reply={"entities": ["ok", 3]})}) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, response_schema=schema)
                run = await run_definition(
                    engine,
                    """
                    name: strict
                    state: {entities: {type: array}}
                    start: analyse
                    nodes:
                      analyse: {type: agent, agent: nlp, output: {entities: result.entities}}
                    """,
                )
                assert run.error is not None
                assert run.error["error"] == "ValidationError"
                assert run.error["details"]["path"] == "/entities/1"
                assert "/entities/1" in run.error["detail"]

    async def test_an_agent_without_a_node_retry_uses_the_agents_retry_policy(
        self, database_url: str
    ) -> None:
        with AgentServer(agents={"nlp": Behaviour(script=(503, 503), reply={"entities": ["z"]})}) as agents:
            async with open_engine(database_url) as engine:
                retry = {"max_attempts": 3, "initial_interval": 0, "max_interval": 0}
                await register(engine, agents, retry=retry)
                run = await run_guarded(engine)
                assert run.output["by"] == "agent"
                types = await event_types(engine, run.id)
                assert types.count("node.retrying:analyse") == 2
                assert invocations(agents, "nlp") == 3


PREFLIGHT_FLOW = """
name: needs-nlp
preflight: [nlp, data]
state: {entities: {type: array}}
start: analyse
nodes:
  analyse: {type: agent, agent: nlp, output: {entities: result.entities}}
"""


class TestPreflight:
    async def test_a_run_whose_agents_cannot_be_relied_on_fails_at_start_saying_why(
        self, database_url: str
    ) -> None:
        with AgentServer(agents={"nlp": Behaviour(reply={"entities": []}), "data": None}) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, "nlp")
                run = await run_definition(engine, PREFLIGHT_FLOW)
                assert run.status.value == "failed"
                assert run.error is not None
                assert run.error["error"] == "PreflightFailed"
                assert run.error["details"]["agents"] == [{"agent": "data", "reason": "not registered"}]
                assert await event_types(engine, run.id) == ["run.queued", "run.started", "run.failed"]
                await register(engine, agents, "data")
                await engine.store.set_agent_health("data", False, {"reason": "test"})
                run = await run_definition(engine, PREFLIGHT_FLOW)
                assert run.error is not None
                assert run.error["details"]["agents"] == [{"agent": "data", "reason": "unhealthy"}]
                await engine.store.set_agent_health("data", True, {"reason": "test"})
                run = await run_definition(engine, PREFLIGHT_FLOW)
                assert run.status.value == "succeeded"
                assert invocations(agents, "nlp") == 1


class TestHealth:
    async def test_failing_probes_mark_an_agent_unhealthy_and_passing_ones_recover_it(
        self, database_url: str
    ) -> None:
        with AgentServer(agents={"nlp": Behaviour(healthy=False)}) as agents:
            async with open_engine(database_url) as engine:
                health = {
                    "probe_interval_seconds": 0.05,
                    "min_samples": 3,
                    "threshold": 0.5,
                    "recover_after": 2,
                }
                await register(engine, agents, health=health)
                monitor = HealthMonitor(engine.store, engine.agents, engine.env.http)
                for _ in range(3):
                    await monitor.tick()
                    await asyncio.sleep(0.06)
                record = await engine.get_agent("nlp")
                assert record.healthy is False
                report = await engine.agent_health("nlp")
                assert report["healthy"] is False
                assert report["success_rate"] == 0.0
                assert report["last_probe"]["error"] == "HTTP 503"
                agents["nlp"].set(healthy=True)
                for _ in range(2):
                    await asyncio.sleep(0.06)
                    await monitor.tick()
                assert (await engine.get_agent("nlp")).healthy is True
                events = [e.type for e in await engine.system_events(type_prefix="agent.")]
                assert events == ["agent.registered", "agent.unhealthy", "agent.healthy"]

    async def test_real_calls_feed_the_rolling_latency_and_success_rate(self, database_url: str) -> None:
        with AgentServer(agents={"nlp": Behaviour(reply={"entities": []}, latency=0.02)}) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, health_path=None)
                for _ in range(3):
                    await run_guarded(engine)
                await engine.health.tick()
                report = await engine.agent_health("nlp")
                assert (report["calls"], report["success_rate"]) == (3, 1.0)
                assert report["latency_ms"]["p50"] >= 20
                assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"]

    async def test_only_one_process_probes_an_agent_per_interval(self, database_url: str) -> None:
        with AgentServer(agents=["nlp"]) as agents:
            async with open_engine(database_url) as engine:
                await register(engine, agents, health={"probe_interval_seconds": 30})
                monitors = [HealthMonitor(engine.store, engine.agents, engine.env.http) for _ in range(3)]
                await asyncio.gather(*(m.tick() for m in monitors))
                assert sum(1 for r in agents["nlp"].requests if r.outcome == "health") == 1
