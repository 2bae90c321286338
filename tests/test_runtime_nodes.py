"""Every node type, run through the real engine (SQLite file, loopback HTTP servers)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine_support import event_types, open_engine, run_definition
from trellis.config import AgentEndpoint, ModelAlias
from trellis.registry import Registry
from trellis.testing import AgentServer, Behaviour, Failure, LlmServer, Replies
from trellis.types import NodeStatus, RunStatus


@pytest.fixture
def tools() -> Registry:
    registry = Registry()

    @registry.tool("double")
    async def double(x: int) -> int:
        return x * 2

    @registry.tool("concat")
    def concat(a: str, b: str) -> str:
        return a + b

    @registry.tool("sleep")
    async def sleep(seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value

    @registry.tool("explode")
    def explode(message: str = "boom") -> None:
        raise ValueError(message)

    return registry


class TestToolSetEndNodes:
    async def test_a_linear_run_succeeds_with_its_output_mapping(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: linear
                state: {x: {type: integer}, y: {type: integer}, s: {type: string}}
                output: {answer: state.y, text: state.s}
                start: one
                nodes:
                  one: {type: tool, tool: double, args: {x: state.x}, output: {y: result}, next: two}
                  two: {type: tool, tool: concat, args: {a: '"n="', b: string(state.y)}, output: {s: result}, next: three}
                  three: {type: end}
                """,
                {"x": 21},
            )
            assert run.status == RunStatus.SUCCEEDED
            assert run.output == {"answer": 42, "text": "n=42"}
            assert await event_types(engine, run.id) == [
                "run.queued",
                "run.started",
                "node.started:one",
                "node.succeeded:one",
                "node.started:two",
                "node.succeeded:two",
                "node.started:three",
                "node.succeeded:three",
                "run.succeeded",
            ]
            states = {n.node: n for n in await engine.store.list_node_states(run.id)}
            assert states["one"].status == NodeStatus.SUCCEEDED
            assert states["one"].data == {"output": {"y": 42}}
            assert states["two"].duration_ms is not None

    async def test_without_an_output_mapping_the_output_is_the_final_state(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: plain
                start: s
                nodes:
                  s: {type: set, values: {a: 1, b: '"two"'}}
                """,
            )
            assert run.output == {"a": 1, "b": "two"}

    async def test_a_tool_exception_fails_the_run_with_a_problem_document(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: explodes
                start: bad
                nodes:
                  bad: {type: tool, tool: explode, args: {message: '"kaboom"'}}
                """,
            )
            assert run.status == RunStatus.FAILED
            assert run.error is not None
            assert run.error["error"] == "ToolError"
            assert "kaboom" in run.error["detail"]
            assert run.error["node"] == "bad"


class TestFailAndRouter:
    async def test_a_router_takes_the_first_matching_route_else_the_default(
        self, database_url: str, tools: Registry
    ) -> None:
        definition = """
            name: routing
            state: {n: {type: number}, picked: {type: string}}
            start: route
            nodes:
              route:
                type: router
                routes:
                  - {when: 'state.n > 100.0', next: big}
                  - {when: 'state.n > 10', next: medium}
                default: small
              big: {type: set, values: {picked: '"big"'}}
              medium: {type: set, values: {picked: '"medium"'}}
              small: {type: set, values: {picked: '"small"'}}
            """
        async with open_engine(database_url, tools) as engine:
            picked = [
                (await run_definition(engine, definition, {"n": n})).output["picked"] for n in (120, 50, 1)
            ]
            assert picked == ["big", "medium", "small"]

    async def test_a_fail_node_fails_the_run_with_its_error_name_and_message(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: failing
                state: {who: {type: string}}
                start: stop
                nodes:
                  stop: {type: fail, error: Refused, message: "no refunds for {{ state.who }}"}
                """,
                {"who": "ada"},
            )
            assert run.status == RunStatus.FAILED
            assert run.error is not None
            assert (run.error["error"], run.error["detail"]) == ("Refused", "no refunds for ada")


class TestRetryTimeoutCatch:
    async def test_a_retried_node_emits_node_retrying_with_attempt_delay_and_error(
        self, database_url: str
    ) -> None:
        with AgentServer(agents={"flaky": Behaviour(script=(Failure(503), Failure(502), "ok"))}) as agents:
            async with open_engine(database_url) as engine:
                run = await run_definition(
                    engine,
                    f"""
                    name: retries
                    start: call
                    nodes:
                      call:
                        type: http
                        url: "{agents.url("flaky")}/invoke"
                        method: POST
                        body: {{q: "hello"}}
                        retry: {{max_attempts: 3, initial_interval: 0, jitter: none}}
                        output: {{status: result.status}}
                    """,
                )
                assert run.status == RunStatus.SUCCEEDED, run.error
                assert agents["flaky"].count == 3
                events = await engine.store.list_events(run.id)
                retrying = [e for e in events if e.type == "node.retrying"]
                assert [e.attempt for e in retrying] == [1, 2]
                assert retrying[0].data is not None
                assert retrying[0].data["error"]["error"] == "HttpError"
                assert retrying[0].data["delay"] == 0
                started = [e.attempt for e in events if e.type == "node.started"]
                assert started == [1, 2, 3]
                state = await engine.store.get_node_state(run.id, "call")
                assert state is not None
                assert (state.status, state.attempt) == (NodeStatus.SUCCEEDED, 3)

    async def test_a_client_error_is_not_retried(self, database_url: str) -> None:
        with AgentServer(agents={"strict": Behaviour(status=404)}) as agents:
            async with open_engine(database_url) as engine:
                run = await run_definition(
                    engine,
                    f"""
                    name: no-retry-on-404
                    start: call
                    nodes:
                      call:
                        type: http
                        url: "{agents.url("strict")}/invoke"
                        retry: {{max_attempts: 5, initial_interval: 0, on: ["*"]}}
                    """,
                )
                assert run.status == RunStatus.FAILED
                assert agents["strict"].count == 1

    async def test_retry_after_is_honoured(self, database_url: str) -> None:
        with AgentServer(agents={"busy": Behaviour(script=(Failure(429, retry_after=0.3), "ok"))}) as agents:
            async with open_engine(database_url) as engine:
                run = await run_definition(
                    engine,
                    f"""
                    name: retry-after
                    start: call
                    nodes:
                      call:
                        type: http
                        url: "{agents.url("busy")}/invoke"
                        retry: {{max_attempts: 2, initial_interval: 0}}
                    """,
                )
                assert run.status == RunStatus.SUCCEEDED
                first, second = agents["busy"].calls
                assert second.time - first.time >= 0.29

    async def test_a_timed_out_node_takes_its_catch_fallback(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            started = time.monotonic()
            run = await run_definition(
                engine,
                """
                name: timeout-fallback
                state: {path: {type: string}}
                start: slow
                nodes:
                  slow:
                    type: tool
                    tool: sleep
                    args: {seconds: 5}
                    timeout: {run: 200ms}
                    retry: {max_attempts: 2, initial_interval: 0}
                    catch: [{errors: [Timeout], next: fallback}]
                    next: primary
                  primary: {type: set, values: {path: '"primary"'}}
                  fallback: {type: set, values: {path: '"fallback"'}}
                """,
            )
            elapsed = time.monotonic() - started
            assert run.status == RunStatus.SUCCEEDED
            assert run.output == {"path": "fallback"}
            assert elapsed < 2.0
            failed = [e for e in await engine.store.list_events(run.id) if e.type == "node.failed"]
            assert failed[0].data is not None
            assert failed[0].data["error"]["error"] == "Timeout"
            assert failed[0].data["caught_by"] == "fallback"
            assert failed[0].attempt == 2

    async def test_a_catch_without_next_applies_its_output_and_continues(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: default-value
                state: {value: {}, after: {type: boolean}}
                start: risky
                nodes:
                  risky:
                    type: tool
                    tool: explode
                    output: {value: result}
                    catch: [{errors: ["*"], output: {value: '"unavailable: " + error.error'}}]
                    next: after
                  after: {type: set, values: {after: true}}
                """,
            )
            assert run.output == {"value": "unavailable: ToolError", "after": True}

    async def test_a_fallback_node_sees_the_error_that_routed_to_it(
        self, database_url: str, tools: Registry
    ) -> None:
        async with open_engine(database_url, tools) as engine:
            run = await run_definition(
                engine,
                """
                name: fallback-error
                state: {reason: {type: string}}
                start: risky
                nodes:
                  risky: {type: tool, tool: explode, catch: [{errors: ["*"], next: fallback}], next: done}
                  fallback: {type: set, values: {reason: 'error != null ? error.error + ": " + error.detail : "none"'}, next: done}
                  done: {type: end}
                """,
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["reason"] == "ToolError: tool 'explode' raised ValueError: boom"

    async def test_an_idle_timeout_fires_when_a_tool_stops_reporting_progress(
        self, database_url: str
    ) -> None:
        registry = Registry()

        @registry.tool("stalls")
        async def stalls(ctx: Any) -> str:
            for _ in range(3):
                ctx.progress("working")
                await asyncio.sleep(0.05)
            await asyncio.sleep(5)
            return "never"

        async with open_engine(database_url, registry) as engine:
            run = await run_definition(
                engine,
                """
                name: idle
                start: work
                nodes:
                  work: {type: tool, tool: stalls, timeout: {idle: 300ms, run: 10s}}
                """,
            )
            assert run.status == RunStatus.FAILED
            assert run.error is not None
            assert run.error["error"] == "Timeout"
            assert "idle timeout" in run.error["detail"]
            progress = [e for e in await engine.store.list_events(run.id) if e.type == "node.progress"]
            assert len(progress) == 3


class TestHttpAgentLlm:
    async def test_an_http_node_renders_url_headers_and_body_templates(self, database_url: str) -> None:
        with AgentServer(agents={"orders": Behaviour()}) as agents:
            async with open_engine(database_url) as engine:
                run = await run_definition(
                    engine,
                    f"""
                    name: http-templates
                    state: {{customer: {{type: string}}, body: {{}}}}
                    start: get
                    nodes:
                      get:
                        type: http
                        method: POST
                        url: "{agents.url("orders")}/customers/{{{{ state.customer }}}}"
                        headers: {{X-Customer: "{{{{ state.customer }}}}"}}
                        body: {{id: "{{{{ state.customer }}}}", fixed: 3}}
                        output: {{body: result.body}}
                    """,
                    {"customer": "c42"},
                )
                assert run.status == RunStatus.SUCCEEDED, run.error
                call = agents["orders"].calls[0]
                assert call.path.endswith("/customers/c42")
                assert call.headers["x-customer"] == "c42"
                assert call.json == {"id": "c42", "fixed": 3}
                assert run.output["body"]["input"] == {"id": "c42", "fixed": 3}

    async def test_an_agent_node_posts_its_input_to_the_named_agent(self, database_url: str) -> None:
        with AgentServer(agents={"nlp": Behaviour(reply={"entities": ["refund"]})}) as agents:
            endpoint = AgentEndpoint(base_url=agents.url("nlp"))
            async with open_engine(database_url, agents={"nlp": endpoint}) as engine:
                run = await run_definition(
                    engine,
                    """
                    name: agent-call
                    state: {text: {type: string}, entities: {type: array}}
                    start: analyse
                    nodes:
                      analyse: {type: agent, agent: nlp, input: {text: state.text}, output: {entities: result.entities}}
                    """,
                    {"text": "I want a refund"},
                )
                assert run.output["entities"] == ["refund"]
                assert agents["nlp"].calls[0].json == {"text": "I want a refund"}

    async def test_an_llm_node_calls_chat_completions_with_the_alias_key_and_parses_json(
        self, database_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
        with LlmServer(responder=Replies(['{"label": "refund", "confidence": 0.9}'])) as llm:
            alias = ModelAlias(base_url=llm.base_url, model="tiny", api_key_env="TEST_LLM_KEY")
            async with open_engine(database_url, models={"small": alias}) as engine:
                run = await run_definition(
                    engine,
                    """
                    name: classify
                    state: {text: {type: string}, label: {type: string}, tokens: {type: integer}}
                    start: classify
                    nodes:
                      classify:
                        type: llm
                        model: small
                        system: "You label tickets."
                        prompt: "Label: {{ state.text }}"
                        output_schema: {type: object, required: [label], properties: {label: {type: string}}}
                        output: {label: result.json.label, tokens: result.usage.total_tokens}
                    """,
                    {"text": "money back please"},
                )
                assert run.status == RunStatus.SUCCEEDED, run.error
                assert run.output["label"] == "refund"
                assert run.output["tokens"] > 0
                request = llm.calls[0]
                assert request.headers["authorization"] == "Bearer sk-test"
                assert request.json["model"] == "tiny"
                assert request.json["messages"][-1]["content"] == "Label: money back please"

    async def test_an_llm_answer_not_matching_output_schema_is_a_validation_error(
        self, database_url: str
    ) -> None:
        with LlmServer(responder=Replies(['{"nope": 1}'])) as llm:
            alias = ModelAlias(base_url=llm.base_url, model="tiny")
            async with open_engine(database_url, models={"small": alias}) as engine:
                run = await run_definition(
                    engine,
                    """
                    name: schema-check
                    start: classify
                    nodes:
                      classify:
                        type: llm
                        model: small
                        prompt: "x"
                        output_schema: {type: object, required: [label]}
                    """,
                )
                assert run.error is not None
                assert run.error["error"] == "ValidationError"
                assert "label" in run.error["detail"]
