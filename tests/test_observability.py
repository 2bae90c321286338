"""trellis.observability: /metrics, run analytics, node logs and retention (each backend)."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api_support import GATE, register, wait_for_status
from trellis.cli import app as cli_app
from trellis.nodes import NodeContext
from trellis.observability import Instruments, collect_garbage, parse_duration
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.store import EventRecord, Store

OBSERVED = textwrap.dedent(
    """
    name: observed
    state: {said: {}}
    start: flaky
    nodes:
      flaky:
        type: tool
        tool: flaky
        retry: {max_attempts: 3, initial_interval: 0, jitter: none, on: ["*"]}
        next: talk
      talk: {type: tool, tool: talk, output: {said: result}}
    """
)
"""``flaky`` fails its first attempt; ``talk`` logs two lines and "calls a model"."""


@pytest.fixture
def api_tools() -> Registry:
    """Overrides conftest's: the tools of OBSERVED and of the api_support definitions."""
    from api_support import steerable_tools

    registry = steerable_tools()
    calls = {"flaky": 0}

    @registry.tool("flaky")
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    @registry.tool("talk")
    def talk(ctx: NodeContext) -> str:  # sync: runs in a worker thread, its logging is captured too
        ctx.log("fetched the page", rows=3)
        logging.getLogger("observed.tools").warning("the page was slow")
        ctx.record_usage("tiny-model", {"prompt_tokens": 5, "completion_tokens": 7})
        return "said"

    return registry


async def run_observed(client: httpx.AsyncClient) -> dict[str, Any]:
    await register(client, OBSERVED)
    run: dict[str, Any] = (await client.post("/v1/runs", json={"workflow": "observed"})).json()
    return await wait_for_status(client, run["id"], "succeeded", "failed")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text ``text`` (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return None


class TestMetrics:
    async def test_runs_nodes_retries_and_tokens_are_counted_without_run_ids(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await run_observed(client)
        assert run["status"] == "succeeded"
        text = (await client.get("/metrics")).text
        wf = {"workflow": "observed"}
        assert sample(text, "trellis_runs_started_total", **wf) == 1
        assert sample(text, "trellis_runs_finished_total", status="succeeded", **wf) == 1
        assert sample(text, "trellis_run_duration_seconds_count", status="succeeded", **wf) == 1
        assert sample(text, "trellis_node_retries_total", node="flaky", **wf) == 1
        assert sample(text, "trellis_node_duration_seconds_count", node="flaky", status="retrying", **wf) == 1
        assert sample(text, "trellis_node_duration_seconds_count", node="talk", status="succeeded", **wf) == 1
        tokens = {"node": "talk", "model": "tiny-model", **wf}
        assert sample(text, "trellis_llm_tokens_total", kind="prompt", **tokens) == 5
        assert sample(text, "trellis_llm_tokens_total", kind="completion", **tokens) == 7
        assert run["id"] not in text  # never a run id as a label

    async def test_queue_gauges_are_read_from_the_store_at_scrape_time(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, GATE)
        await client.post("/v1/runs", json={"workflow": "gate"})  # no worker: it stays queued
        text = (await client.get("/metrics")).text
        assert sample(text, "trellis_queue_depth", status="queued", workflow="gate") == 1
        oldest = sample(text, "trellis_queue_oldest_age_seconds")
        assert oldest is not None
        assert oldest >= 0
        assert sample(text, "trellis_event_stream_subscribers") == 0
        assert sample(text, "trellis_leases_expired") == 0

    def test_a_run_taken_over_after_its_lease_expired_counts_a_lease_expiration(self) -> None:
        instruments = Instruments()
        now = datetime.now(UTC)
        resumed = EventRecord("r1", 5, now, "run.resumed", None, None, {"from": "lease_expired"})
        instruments.observer("wf", now)([resumed])
        assert instruments.lease_expirations.labels("wf")._value.get() == 1

    async def test_a_running_run_claimed_after_its_lease_expired_is_marked_so(self, store: Store) -> None:
        workflow, _ = await store.put_workflow(name="w", hash="h", kind="dsl", definition={}, source=None)
        run = await store.create_run(workflow="w", version=workflow.version, hash="h", input={})
        assert await store.claim_runs(owner="dead:1:a", limit=1, lease_seconds=0.01)
        await asyncio.sleep(0.05)
        [taken] = await store.claim_runs(owner="live:2:b", limit=1, lease_seconds=30)
        assert (taken.id, taken.parked) == (run.id, {"kind": "lease_expired"})


class TestSummary:
    async def test_success_rate_percentiles_node_retries_and_tokens(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await run_observed(client)
        summary = (await client.get("/v1/metrics/summary", params={"workflow": "observed"})).json()
        [observed] = summary["workflows"]
        assert (observed["runs"], observed["success_rate"]) == (1, 1.0)
        assert observed["duration_seconds"]["p50"] is not None
        nodes = {n["node"]: n for n in observed["nodes"]}
        assert nodes["flaky"]["retries"] == {"1": 1}
        assert nodes["flaky"]["failure_rate"] == 0.0
        assert nodes["talk"]["duration_ms"]["p95"] is not None
        tokens = summary["tokens"]
        assert (tokens["prompt_tokens"], tokens["completion_tokens"], tokens["calls"]) == (5, 7, 1)
        assert tokens["runs"] == [
            {
                "run_id": run["id"],
                "workflow": "observed",
                "prompt_tokens": 5,
                "completion_tokens": 7,
                "total_tokens": 12,
                "calls": 1,
            }
        ]
        assert tokens["nodes"][0]["model"] == "tiny-model"

    async def test_the_window_excludes_older_runs_and_bad_input_is_a_422(
        self, client: httpx.AsyncClient
    ) -> None:
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        await register(client, GATE)
        await client.post("/v1/runs", json={"workflow": "gate"})
        assert (await client.get("/v1/metrics/summary")).json()["workflows"][0]["runs"] == 1
        later = (await client.get("/v1/metrics/summary", params={"since": future})).json()
        assert later["workflows"] == []
        assert (await client.get("/v1/metrics/summary", params={"since": "yesterday"})).status_code == 422


class TestLogs:
    async def test_lines_from_ctx_log_and_python_logging_are_stored_with_the_run(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await run_observed(client)
        body = (await client.get(f"/v1/runs/{run['id']}/logs")).json()
        lines = [(x["node"], x["attempt"], x["level"], x["logger"], x["message"]) for x in body["logs"]]
        assert lines == [
            ("talk", 1, "info", "trellis.node", "fetched the page"),
            ("talk", 1, "warning", "observed.tools", "the page was slow"),
        ]
        assert body["logs"][0]["data"] == {"rows": 3}
        warnings = (await client.get(f"/v1/runs/{run['id']}/logs", params={"level": "warning"})).json()
        assert [x["message"] for x in warnings["logs"]] == ["the page was slow"]
        assert (await client.get("/v1/runs/nope/logs")).status_code == 404


class TestRetention:
    async def test_gc_prunes_finished_runs_rows_and_checkpoints_and_keeps_the_rest(
        self, client: httpx.AsyncClient, worker: Worker, api_engine: Engine
    ) -> None:
        finished = await run_observed(client)
        await register(client, GATE)
        waiting = (await client.post("/v1/runs", json={"workflow": "gate"})).json()
        await wait_for_status(client, waiting["id"], "waiting")
        store, saver = api_engine.store, api_engine.saver
        later = datetime.now(UTC) + timedelta(days=31)
        assert (await collect_garbage(store, saver, older_than=timedelta(days=30))).runs == []

        dry = await collect_garbage(store, saver, older_than=timedelta(days=30), now=later, dry_run=True)
        assert dry.runs == [finished["id"]]
        assert dry.deleted["events"] > 0
        assert (dry.deleted["logs"], dry.deleted["node_states"]) == (2, 2)
        assert len(await store.list_events(finished["id"])) > 1  # a dry run deletes nothing

        report = await collect_garbage(store, saver, older_than=timedelta(days=30), now=later)
        assert (report.runs, report.deleted) == (dry.runs, dry.deleted)
        assert [e.type for e in await store.list_events(finished["id"])] == ["run.succeeded"]
        assert await store.list_node_states(finished["id"]) == []
        assert await store.list_logs(finished["id"]) == []
        assert [c async for c in saver.alist({"configurable": {"thread_id": finished["id"]}})] == []
        assert (await api_engine.get_run(finished["id"])).output == finished["output"]  # the row stays
        assert len(await store.list_events(waiting["id"])) > 1  # a parked run is never pruned
        again = await collect_garbage(store, saver, older_than=timedelta(days=30), now=later)
        assert again.runs == []
        stream = await client.get(f"/v1/runs/{finished['id']}/stream", timeout=5)
        assert "event: run.succeeded" in stream.text  # a pruned run's stream still ends

    def test_durations_read_like_the_cli_takes_them(self) -> None:
        assert parse_duration("30d") == timedelta(days=30)
        assert parse_duration("90m") == timedelta(minutes=90)
        assert parse_duration(45) == timedelta(seconds=45)
        for bad in ("30", "-1d", "0s", "soon"):
            with pytest.raises(ValueError, match=r"duration|positive"):
                parse_duration(bad)

    def test_the_gc_command_reports_as_json(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRELLIS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(cli_app, ["gc", "--older-than", "1h", "--dry-run", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (report["dry_run"], report["runs"], report["run_ids"]) == (True, 0, [])
        bad = CliRunner().invoke(cli_app, ["gc", "--older-than", "soon"])
        assert bad.exit_code == 2


class TestJsonLogs:
    def test_service_logs_are_json_lines_carrying_run_node_and_attempt(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import structlog

        from trellis.nodes._logs import node_scope
        from trellis.observability import configure_logging

        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        stored: list[dict[str, Any]] = []
        try:
            configure_logging("info")
            with node_scope("run-1", "fetch", 2, stored.append):
                logging.getLogger("my.tool").info("fetched %d rows", 3)
                structlog.get_logger("my.tool").warning("slow", seconds=4)
        finally:
            root.handlers[:], root.level = saved
            structlog.reset_defaults()
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        assert [(x["event"], x["level"], x["run_id"], x["node"], x["attempt"]) for x in lines] == [
            ("fetched 3 rows", "info", "run-1", "fetch", 2),
            ("slow", "warning", "run-1", "fetch", 2),
        ]
        assert lines[1]["seconds"] == 4
        assert [(s["message"], s["level"], s["logger"]) for s in stored] == [
            ("fetched 3 rows", "info", "my.tool"),
            ("slow", "warning", "my.tool"),
        ]


class TestLlmUsage:
    async def test_an_llm_nodes_token_usage_is_in_its_event_and_in_the_counters(
        self, database_url: str
    ) -> None:
        from engine_support import open_engine, run_definition
        from trellis.config import ModelAlias
        from trellis.testing import LlmServer, Replies

        with LlmServer(responder=Replies(["refund"])) as llm:
            alias = ModelAlias(base_url=llm.base_url, model="tiny")
            async with open_engine(database_url, models={"small": alias}) as engine:
                run = await run_definition(
                    engine,
                    """
                    name: label
                    state: {label: {type: string}}
                    start: classify
                    nodes:
                      classify: {type: llm, model: small, prompt: "Label it", output: {label: result.text}}
                    """,
                    {},
                )
                [done] = [e for e in await engine.store.list_events(run.id) if e.type == "node.succeeded"]
                usage = (done.data or {})["usage"]
                assert usage["model"] == "tiny"
                assert usage["prompt_tokens"] > 0
                assert usage["completion_tokens"] > 0
                tokens = engine.instruments.llm_tokens
                assert (
                    tokens.labels("label", "classify", "tiny", "prompt")._value.get()
                    == usage["prompt_tokens"]
                )
