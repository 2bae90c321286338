"""The example workflows in ``examples/``: each validates cleanly and every path it documents runs.

Runs go through a real engine on a SQLite file, against the examples' own fake services
(``examples/agents.py``: loopback agents and HTTP services, and a fake model server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine_support import open_engine
from trellis.config import AgentEndpoint, ModelAlias, Settings
from trellis.dsl import AgentNode, LlmNode, ToolNode, load_document, validate, walk
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store import EventRecord, RunRecord
from trellis.testing import AgentServer, LlmServer
from trellis.types import NodeStatus, RunStatus

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (``examples/`` is a folder of files, not a package)."""
    spec = importlib.util.spec_from_file_location(f"trellis_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example_tools = _load("tools")
example_agents = _load("agents")


def _free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def tools() -> Registry:
    registry: Registry = example_tools.register(Registry())
    return registry


@pytest.fixture(scope="module")
def shared_services() -> Iterator[AgentServer]:
    with example_agents.agent_server() as server:
        yield server


@pytest.fixture
def services(shared_services: AgentServer) -> AgentServer:
    shared_services.reset()
    return shared_services


@pytest.fixture(scope="module")
def shared_llm() -> Iterator[LlmServer]:
    with example_agents.llm_server() as server:
        yield server


@pytest.fixture
def llm(shared_llm: LlmServer) -> LlmServer:
    shared_llm.reset()
    return shared_llm


def _models(base_url: str) -> dict[str, ModelAlias]:
    return {
        alias: ModelAlias(base_url=base_url, model=f"fake-{alias}") for alias in ("small", "large", "summary")
    }


def _agents(services: AgentServer, **overrides: str) -> dict[str, AgentEndpoint]:
    """The example's agents (examples/trellis.toml, breakers included) at the fake services."""
    configured = Settings.load(EXAMPLES / "trellis.toml", env={}).agents
    return {
        name: replace(configured[name], base_url=overrides.get(name, services.url(name)))
        for name in ("nlp", "data", "viz")
    }


async def run_example(engine: Engine, name: str, run_input: Any, *, text: str | None = None) -> RunRecord:
    """Register ``examples/<name>.yaml`` (or ``text``), submit a run and execute it until it ends or parks."""
    path = EXAMPLES / f"{name}.yaml"
    record = await engine.register(text or path.read_text(), filename=str(path))
    run = await engine.submit(f"{record.name}@{record.version}", run_input)
    return await engine.execute(run.id)


async def node_statuses(engine: Engine, run_id: str) -> dict[str, NodeStatus]:
    return {n.node: n.status for n in await engine.store.list_node_states(run_id)}


async def failures(engine: Engine, run_id: str) -> dict[str, EventRecord]:
    """The ``node.failed`` events of a run, by node."""
    return {e.node or "": e for e in await engine.store.list_events(run_id) if e.type == "node.failed"}


# -- every definition ------------------------------------------------------------------------


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


class TestDefinitions:
    def test_there_are_three_examples(self) -> None:
        assert [p.stem for p in EXAMPLE_FILES] == ["nlp_data_viz", "refund_triage", "troubleshooting"]

    @pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
    def test_the_definition_validates_without_any_diagnostic(self, path: Path) -> None:
        document = load_document(path.read_text(), str(path))
        report = validate(document.data, document)
        assert [d.format(str(path)) for d in [*document.diagnostics, *report.diagnostics]] == []
        assert report.workflow is not None

    @pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
    def test_every_tool_agent_and_model_it_names_is_provided(self, path: Path, tools: Registry) -> None:
        """The tools are in examples/tools.py; the agents and model aliases in examples/trellis.toml."""
        report = validate(load_document(path.read_text(), str(path)).data)
        assert report.workflow is not None
        config = tomllib.loads((EXAMPLES / "trellis.toml").read_text())
        assert Settings.load(EXAMPLES / "trellis.toml", env={}).tools == (str(EXAMPLES / "tools.py"),)
        for ref in walk(report.workflow):
            node = ref.node
            if isinstance(node, ToolNode):
                assert node.tool in tools.tools, ref.pointer
            elif isinstance(node, AgentNode):
                assert node.agent in config["agents"], ref.pointer
                assert config["agents"][node.agent]["base_url"].endswith(
                    f":{example_agents.AGENT_PORT}/{node.agent}"
                )
            elif isinstance(node, LlmNode):
                assert node.model in config["models"], ref.pointer
                assert f":{example_agents.LLM_PORT}/" in config["models"][node.model]["base_url"]


# -- (a) nlp -> data -> viz ----------------------------------------------------------------------

TEXT = "Ada Lovelace wrote to Charles Babbage from London about the Analytical Engine."


class TestNlpDataViz:
    async def test_the_happy_path_uses_all_three_agents(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        async with open_engine(tmp_path, tools, agents=_agents(services)) as engine:
            run = await run_example(engine, "nlp_data_viz", {"text": TEXT, "title": "Who"})
            assert run.status == RunStatus.SUCCEEDED, run.error
            out = run.output
            assert out["entities"] == ["Ada Lovelace", "Charles Babbage", "London", "Analytical Engine"]
            assert out["entities_by"] == "nlp-agent"
            assert [row["entity"] for row in out["rows"]] == out["entities"]
            assert out["chart"]["kind"] == "chart"
            assert out["chart"]["spec"]["title"] == "Who"
            assert out["chart"]["spec"]["data"]["values"] == out["rows"]
            assert out["notes"] == []
            statuses = await node_statuses(engine, run.id)
            assert statuses == dict.fromkeys(("nlp", "data", "viz"), NodeStatus.SUCCEEDED)
            assert services["data"].calls[0].json == {"entities": out["entities"]}

    async def test_nlp_down_falls_back_to_local_keyword_extraction(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        services["nlp"].set(status=503)
        async with open_engine(tmp_path, tools, agents=_agents(services)) as engine:
            run = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["entities_by"] == "keywords"
            assert run.output["entities"] == ["ada", "lovelace", "wrote", "charles", "babbage"]
            assert run.output["notes"] == ["nlp agent unavailable: entities are keywords extracted locally"]
            assert run.output["chart"]["kind"] == "chart"
            assert services["nlp"].count == 3  # the `agent` retry policy: 3 attempts on a 503
            statuses = await node_statuses(engine, run.id)
            assert statuses["nlp"] == NodeStatus.FAILED
            assert statuses["keywords"] == NodeStatus.SUCCEEDED
            failed = (await failures(engine, run.id))["nlp"]
            assert failed.data is not None
            assert (failed.attempt, failed.data["caught_by"]) == (3, "keywords")
            assert failed.data["error"]["error"] == "HttpError"

    async def test_data_down_continues_with_an_empty_dataset_and_a_note(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        nowhere = f"http://127.0.0.1:{_free_port()}/data"
        async with open_engine(tmp_path, tools, agents=_agents(services, data=nowhere)) as engine:
            run = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["rows"] == []
            assert run.output["notes"] == [
                "data agent unavailable (ConnectionError): continued with an empty dataset"
            ]
            assert run.output["chart"]["spec"]["data"]["values"] == []
            assert services["viz"].calls[0].json["rows"] == []
            failed = (await failures(engine, run.id))["data"]
            assert failed.data is not None
            assert failed.data["caught_by"] == "viz"  # no fallback node: on to data's `next`

    async def test_each_agent_has_its_breaker_thresholds(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        async with open_engine(tmp_path, tools, agents=_agents(services)) as engine:
            policies = {
                a.name: (a.spec["breaker"]["failure_threshold"], a.spec["breaker"]["recovery_seconds"])
                for a in await engine.store.list_agents()
            }
            assert policies == {"nlp": (5, 60), "data": (3, 120), "viz": (5, 60)}

    async def test_a_failing_nlp_agent_opens_its_circuit_and_later_runs_fall_back_at_once(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        services["nlp"].set(status=503)
        async with open_engine(tmp_path, tools, agents=_agents(services)) as engine:
            first = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            second = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            # 3 attempts in the first run, then the 5th failure (2nd attempt of run 2) opens it
            assert services["nlp"].count == 5
            assert (await failures(engine, second.id))["nlp"].data["error"]["error"] == "CircuitOpen"  # type: ignore[index]
            third = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            assert services["nlp"].count == 5  # refused without a call
            for run in (first, second, third):
                assert run.status == RunStatus.SUCCEEDED, run.error
                assert run.output["entities_by"] == "keywords"
            failed = (await failures(engine, third.id))["nlp"]
            assert failed.data is not None
            assert (failed.attempt, failed.data["error"]["error"]) == (1, "CircuitOpen")
            breaker = await engine.store.get_breaker("agent:nlp")
            assert breaker is not None
            assert breaker.state == "open"

    async def test_viz_down_renders_a_plain_table(
        self, tmp_path: Path, tools: Registry, services: AgentServer
    ) -> None:
        services["viz"].set(status=503)
        async with open_engine(tmp_path, tools, agents=_agents(services)) as engine:
            run = await run_example(engine, "nlp_data_viz", {"text": TEXT})
            assert run.status == RunStatus.SUCCEEDED, run.error
            chart = run.output["chart"]
            assert chart["kind"] == "table"
            assert chart["columns"] == ["entity", "mentions", "trend"]
            lines = chart["text"].splitlines()
            assert lines[0] == "Entities mentioned"
            assert lines[1].split() == ["entity", "mentions", "trend"]
            assert lines[3].startswith("Ada Lovelace")
            assert run.output["notes"] == ["viz agent unavailable: rendered a plain table instead of a chart"]
            statuses = await node_statuses(engine, run.id)
            assert (statuses["viz"], statuses["table"]) == (NodeStatus.FAILED, NodeStatus.SUCCEEDED)
            assert services["viz"].count == 3


# -- (b) parallel troubleshooting ----------------------------------------------------------------

SOURCES = ["logs", "metrics", "traces", "config"]


class TestTroubleshooting:
    async def test_all_four_sources_answer_in_about_the_slowest_ones_time(
        self, tmp_path: Path, tools: Registry, llm: LlmServer
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            run = await run_example(engine, "troubleshooting", {"service": "checkout-api"})
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["sources"] == {"succeeded": SOURCES, "failed": {}}
            latency = run.output["latency"]
            # metrics (500 ms) bounds the fan-out; the four sources sum to 950 ms one after the other
            assert 0.45 <= latency["parallel_s"] < 0.9
            assert 0.9 <= latency["sequential_s"] < 1.5
            assert latency["speedup"] > 1
            assert {f["source"] for f in run.output["findings"]} == set(SOURCES)
            summary = run.output["summary"]
            assert summary["generated_by"] == "llm"
            assert summary["text"].startswith("Likely cause")
            assert summary["suspect"]["source"] == "config"
            assert "checkout-api" in llm.calls[0].json["messages"][-1]["content"]
            progress = [e for e in await engine.store.list_events(run.id) if e.type == "node.progress"]
            measured = [e for e in progress if e.node == "aggregate"]
            assert measured[0].data is not None
            assert measured[0].data["speedup"] == latency["speedup"]

    @pytest.mark.parametrize(
        ("faults", "source", "error"),
        [
            ({"fail": ["traces"]}, "traces", "ConnectionError"),
            ({"slow": {"config": 3}}, "config", "Timeout"),  # over config's 500 ms limit
        ],
        ids=["refused", "too-slow"],
    )
    async def test_one_source_failing_still_succeeds_and_names_it(
        self,
        tmp_path: Path,
        tools: Registry,
        llm: LlmServer,
        faults: dict[str, Any],
        source: str,
        error: str,
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            started = time.monotonic()
            run = await run_example(engine, "troubleshooting", {"service": "checkout-api", **faults})
            assert time.monotonic() - started < 2.5
            assert run.status == RunStatus.SUCCEEDED, run.error
            sources = run.output["sources"]
            assert sources["succeeded"] == [s for s in SOURCES if s != source]
            assert list(sources["failed"]) == [source]
            assert sources["failed"][source]["error"] == error
            assert source not in {f["source"] for f in run.output["findings"]}
            assert run.output["latency"]["speedup"] > 1
            assert (await node_statuses(engine, run.id))[source] == NodeStatus.FAILED

    async def test_two_sources_failing_fail_the_run(
        self, tmp_path: Path, tools: Registry, llm: LlmServer
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            run = await run_example(
                engine, "troubleshooting", {"service": "checkout-api", "fail": ["traces", "logs"]}
            )
            assert run.status == RunStatus.FAILED
            assert run.error is not None
            assert run.error["error"] == "ConnectionError"
            assert "2 of 4 branches failed" in run.error["detail"]
            assert "3 had to succeed" in run.error["detail"]
            assert llm.count == 0
            statuses = await node_statuses(engine, run.id)
            assert "aggregate" not in statuses

    @pytest.mark.parametrize("model_down", ["nothing-listening", "status-500"])
    async def test_without_a_model_the_summary_is_built_from_the_data(
        self, tmp_path: Path, tools: Registry, llm: LlmServer, model_down: str
    ) -> None:
        if model_down == "status-500":
            llm.set(status=500)
            base_url, error = llm.base_url, "LlmError"
        else:
            base_url, error = f"http://127.0.0.1:{_free_port()}/v1", "ConnectionError"
        async with open_engine(tmp_path, tools, models=_models(base_url)) as engine:
            run = await run_example(
                engine, "troubleshooting", {"service": "checkout-api", "fail": ["metrics"]}
            )
            assert run.status == RunStatus.SUCCEEDED, run.error
            summary = run.output["summary"]
            assert summary["generated_by"] == "fallback"
            assert summary["reason"] == f"no model answered: {error}"
            assert summary["unchecked"] == ["metrics"]
            assert summary["text"].startswith("Incident on checkout-api. Most likely cause (config): ")
            assert summary["text"].endswith("Not checked (source unavailable): metrics.")
            failed = (await failures(engine, run.id))["summarise"]
            assert failed.data is not None
            assert (failed.attempt, failed.data["caught_by"]) == (2, "fallback_summary")
            assert (await node_statuses(engine, run.id))["fallback_summary"] == NodeStatus.SUCCEEDED


# -- (c) refund triage ---------------------------------------------------------------------------


def _ticket(body: str, amount: float | None = None, ticket_id: str = "T-1001") -> dict[str, Any]:
    ticket: dict[str, Any] = {
        "id": ticket_id,
        "customer_id": "c-17",
        "email": "ada@example.com",
        "body": body,
    }
    if amount is not None:
        ticket["amount"] = amount
    return ticket


BIG_REFUND = _ticket("I was charged twice for my order, please refund me.", 120)


def _refund_input(services: AgentServer, ticket: dict[str, Any]) -> dict[str, Any]:
    return {
        "ticket": ticket,
        "services": {"orders": services.url("orders"), "payments": services.url("payments")},
    }


class TestRefundTriage:
    async def test_an_approved_refund_is_paid_and_the_reply_sent(
        self, tmp_path: Path, tools: Registry, services: AgentServer, llm: LlmServer
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            parked = await run_example(engine, "refund_triage", _refund_input(services, BIG_REFUND))
            assert parked.status == RunStatus.WAITING, parked.error
            assert parked.parked is not None
            gate = parked.parked["interrupts"][0]
            assert gate["title"] == "Refund 120 EUR to customer c-17 (ticket T-1001)?"
            assert gate["assignees"] == ["group:support-leads"]
            assert services["orders"].calls[0].path == "/customers/c-17/orders"
            assert services["payments"].count == 0  # nothing is paid before the decision

            await engine.decide(
                parked.id, approved=True, actor="lead:grace", data={"note": "duplicate charge"}
            )
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            out = run.output
            assert (out["intent"], out["approved"], out["escalation"]) == ("refund", True, None)
            assert out["refund"]["status"] == "accepted"
            payment = services["payments"].calls[0]
            assert payment.json == {
                "ticket": "T-1001",
                "customer": "c-17",
                "amount": 120,
                "currency": "EUR",
            }
            assert payment.headers["idempotency-key"] == "refund-T-1001"
            assert out["reply"].startswith("Hello, thank you for reaching out.")
            assert out["delivery"]["to"] == "ada@example.com"
            assert out["delivery"]["subject"] == "Re: ticket T-1001"
            draft_prompt = llm.calls[1].json["messages"][-1]["content"]
            assert '"source": "kb"' in draft_prompt
            assert '"source": "orders"' in draft_prompt

    async def test_a_rejected_refund_pays_nothing_and_sends_a_polite_no(
        self, tmp_path: Path, tools: Registry, services: AgentServer, llm: LlmServer
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            parked = await run_example(engine, "refund_triage", _refund_input(services, BIG_REFUND))
            await engine.decide(
                parked.id,
                approved=False,
                actor="lead:grace",
                comment="the second charge was refunded already",
            )
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert services["payments"].count == 0
            out = run.output
            assert (out["approved"], out["refund"], out["escalation"]) == (False, None, None)
            assert out["reply"].startswith("Hello, we have reviewed your refund request for ticket T-1001")
            assert "cannot approve it: the second charge was refunded already." in out["reply"]
            assert out["delivery"]["status"] == "queued"
            statuses = await node_statuses(engine, run.id)
            assert statuses["decline"] == NodeStatus.SUCCEEDED
            assert "refund" not in statuses

    async def test_a_refund_the_payments_service_refuses_is_escalated(
        self, tmp_path: Path, tools: Registry, services: AgentServer, llm: LlmServer
    ) -> None:
        services["payments"].set(status=500)
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            parked = await run_example(engine, "refund_triage", _refund_input(services, BIG_REFUND))
            await engine.decide(parked.id, approved=True, actor="lead:grace")
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert services["payments"].count == 3  # the `payments` retry policy
            escalation = run.output["escalation"]
            assert escalation["case"] == "ESC-T-1001"
            assert escalation["reason"].startswith("HttpError: http node 'refund' answered 500")
            assert run.output["refund"] is None
            assert run.output["reply"] == escalation["reply"]
            assert run.output["delivery"]["to"] == "ada@example.com"
            failed = (await failures(engine, run.id))["refund"]
            assert failed.data is not None
            assert failed.data["caught_by"] == "escalate"

    async def test_an_undecided_approval_is_escalated_when_it_times_out(
        self, tmp_path: Path, tools: Registry, services: AgentServer, llm: LlmServer
    ) -> None:
        text = (EXAMPLES / "refund_triage.yaml").read_text()
        assert "after: 48h" in text
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            parked = await run_example(
                engine,
                "refund_triage",
                _refund_input(services, BIG_REFUND),
                text=text.replace("after: 48h", "after: 100ms"),
            )
            assert parked.status == RunStatus.WAITING
            await asyncio.sleep(0.15)
            run = await engine.execute(parked.id)
            assert run.status == RunStatus.SUCCEEDED, run.error
            assert run.output["escalation"]["reason"] == "approval timed out"
            assert services["payments"].count == 0

    @pytest.mark.parametrize(
        ("ticket", "intent", "gathered", "gated"),
        [
            (BIG_REFUND, "refund", True, True),
            (_ticket("Please refund the 12 EUR shipping fee.", 12), "refund", False, True),
            (_ticket("The app crashes when I export to CSV."), "bug", False, False),
            (_ticket("Do you ship to Iceland?"), "other", False, False),
        ],
        ids=["big-refund", "small-refund", "bug", "other"],
    )
    async def test_the_classification_picks_the_route(
        self,
        tmp_path: Path,
        tools: Registry,
        services: AgentServer,
        llm: LlmServer,
        ticket: dict[str, Any],
        intent: str,
        gathered: bool,
        gated: bool,
    ) -> None:
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            run = await run_example(engine, "refund_triage", _refund_input(services, ticket))
            statuses = await node_statuses(engine, run.id)
            assert ("gather" in statuses) is gathered
            assert (services["orders"].count == 1) is gathered
            if gated:
                assert run.status == RunStatus.WAITING
                assert statuses["approve"] == NodeStatus.RUNNING
            else:
                assert run.status == RunStatus.SUCCEEDED, run.error
                assert run.output["intent"] == intent
                assert run.output["approved"] is None
                assert statuses["answer"] == NodeStatus.SUCCEEDED
                assert run.output["reply"].startswith("Hello, thank you for getting in touch.")
                assert run.output["delivery"]["to"] == "ada@example.com"
            state = await engine.state(run.id)
            assert state["values"]["intent"] == intent

    async def test_missing_order_history_is_noted_and_the_run_goes_on(
        self, tmp_path: Path, tools: Registry, services: AgentServer, llm: LlmServer
    ) -> None:
        services["orders"].set(status=404)
        async with open_engine(tmp_path, tools, models=_models(llm.base_url)) as engine:
            run = await run_example(engine, "refund_triage", _refund_input(services, BIG_REFUND))
            assert run.status == RunStatus.WAITING, run.error
            evidence = (await engine.state(run.id))["values"]["evidence"]
            assert [e["source"] for e in sorted(evidence, key=lambda e: e["source"])] == ["kb", "orders"]
            orders = next(e for e in evidence if e["source"] == "orders")
            assert "answered 404" in orders["unavailable"]
