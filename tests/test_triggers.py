"""trellis.triggers: schedules, webhooks in, callbacks out, single-node execution.

Every test here runs on SQLite and on PostgreSQL (``database_url``). The message-bus consumers
and the event publisher are in ``test_triggers_bus.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api_support import register, wait_for_status
from trellis.api import ApiSettings, create_app
from trellis.cli import app as cli_app
from trellis.config import Settings
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine
from trellis.testing import AgentServer, Behaviour
from trellis.triggers import CallbackDispatcher, Scheduler, create_trigger, first_tick

SCHEDULED = textwrap.dedent(
    """
    name: report
    input: {type: object, properties: {region: {type: string}}}
    state: {region: {type: string}, done: {type: boolean}}
    start: finish
    nodes:
      finish: {type: set, values: {done: true}}
    schedules:
      - {name: every-five, cron: "*/5 * * * *", timezone: Europe/Berlin, input: {region: eu}}
      - {name: hourly-once, cron: "0 * * * *", missed: run_once}
    """
)

ORDERS = textwrap.dedent(
    """
    name: orders
    input: {type: object, required: [order], properties: {order: {type: string}}}
    state: {order: {type: string}, seen: {type: string}}
    start: route
    nodes:
      route:
        type: router
        routes: [{when: 'state.order == "vip"', next: vip}, {when: 'state.order == "bad"', next: boom}]
        default: plain
      vip: {type: set, values: {seen: '"vip " + state.order'}}
      plain: {type: set, values: {seen: '"plain " + state.order'}}
      boom: {type: tool, tool: step, args: {name: state.order}, output: {seen: result}}
    """
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    from api_support import steerable_tools

    async with Engine.open(Settings(database_url=database_url), registry=steerable_tools()) as opened:
        yield opened


async def _runs(engine: Engine, workflow: str) -> list[str]:
    runs, _ = await engine.store.list_runs(workflow=workflow, limit=1000)
    return [r.id for r in runs]


class TestSchedules:
    async def test_a_workflows_schedules_become_stored_schedules_with_their_first_tick(
        self, engine: Engine
    ) -> None:
        await engine.register(SCHEDULED)
        await Scheduler(engine).sync_workflow_schedules()
        schedules = {t.name: t for t in await engine.store.list_triggers(kind="schedule")}
        assert set(schedules) == {"every-five", "hourly-once"}
        every = schedules["every-five"]
        assert (every.workflow, every.origin, every.spec["timezone"]) == (
            "report@1",
            "workflow",
            "Europe/Berlin",
        )
        assert every.next_fire_at is not None
        assert every.next_fire_at > datetime.now(UTC)
        assert every.next_fire_at.minute % 5 == 0

    async def test_a_due_tick_starts_exactly_one_run_with_the_schedules_input(self, engine: Engine) -> None:
        await engine.register(SCHEDULED)
        scheduler = Scheduler(engine)
        await scheduler.sync_workflow_schedules()
        await engine.store.update_trigger("hourly-once", enabled=False)
        due = (await engine.store.get_trigger("every-five")).next_fire_at  # type: ignore[union-attr]
        assert due is not None
        created = await scheduler.tick(due + timedelta(seconds=1))
        assert [r.input for r in created] == [{"region": "eu"}]
        trigger = (created[0].options or {})["trigger"]
        assert (trigger["name"], trigger["kind"]) == ("every-five", "schedule")
        assert datetime.fromisoformat(trigger["tick"]) == due
        assert await scheduler.tick(due + timedelta(seconds=2)) == []
        after = await engine.store.get_trigger("every-five")
        assert after is not None
        assert after.next_fire_at == due + timedelta(minutes=5)
        assert after.last_run_id == created[0].id

    async def test_two_schedulers_racing_for_the_same_tick_create_one_run(self, database_url: str) -> None:
        """Two engines (two processes' worth of connections) pass over the same due tick at once."""
        async with (
            Engine.open(Settings(database_url=database_url), registry=Registry()) as one,
            Engine.open(Settings(database_url=database_url), registry=Registry()) as two,
        ):
            await one.register(SCHEDULED)
            await Scheduler(one).sync_workflow_schedules()
            await one.store.update_trigger("hourly-once", enabled=False)
            due = (await one.store.get_trigger("every-five")).next_fire_at  # type: ignore[union-attr]
            assert due is not None
            now = due + timedelta(seconds=1)
            created = 0
            for _ in range(3):  # several rounds, to give the race chances to go either way
                first, second = await asyncio.gather(Scheduler(one).tick(now), Scheduler(two).tick(now))
                assert len(first) + len(second) == 1
                created += 1
                now += timedelta(minutes=5)
            assert len(await _runs(one, "report")) == created

    async def test_missed_ticks_are_skipped_or_run_once_as_declared(self, engine: Engine) -> None:
        await engine.register(SCHEDULED)
        scheduler = Scheduler(engine)
        await scheduler.sync_workflow_schedules()
        # a downtime of hours, ending 150 s after a five-minute tick: that tick is missed too
        later = first_tick({"cron": "*/5 * * * *", "timezone": "UTC"}, datetime.now(UTC) + timedelta(hours=5))
        later += timedelta(seconds=150)
        created = await scheduler.tick(later)
        assert [r.options["trigger"]["name"] for r in created] == ["hourly-once"]  # type: ignore[index]
        assert created[0].options["trigger"]["missed_ticks"] in (5, 6)  # type: ignore[index]
        for name in ("every-five", "hourly-once"):
            schedule = await engine.store.get_trigger(name)
            assert schedule is not None
            assert schedule.next_fire_at is not None
            assert schedule.next_fire_at > later  # skipped ones are not made up later

    async def test_paused_schedules_start_nothing_and_resume_from_the_next_tick(
        self, engine: Engine, client: httpx.AsyncClient
    ) -> None:
        await engine.register(SCHEDULED)
        scheduler = Scheduler(engine)
        await scheduler.sync_workflow_schedules()
        paused = await client.post("/v1/schedules/every-five/pause")
        assert paused.status_code == 200
        assert paused.json()["enabled"] is False
        await client.post("/v1/schedules/hourly-once/pause")
        assert await scheduler.tick(datetime.now(UTC) + timedelta(hours=2)) == []
        resumed = (await client.post("/v1/schedules/every-five/resume")).json()
        assert resumed["enabled"] is True
        assert datetime.fromisoformat(resumed["next_fire_at"]) > datetime.now(UTC)
        listed = (await client.get("/v1/schedules")).json()["schedules"]
        assert [(s["name"], s["enabled"]) for s in listed] == [("every-five", True), ("hourly-once", False)]
        assert (await client.post("/v1/schedules/nope/pause")).status_code == 404

    async def test_a_registered_schedule_gets_its_first_tick_in_its_time_zone(self, engine: Engine) -> None:
        await engine.register(ORDERS)
        record = await create_trigger(
            engine, "daily", "schedule", "orders", {"cron": "30 9 * * *", "timezone": "America/New_York"}
        )
        assert record.next_fire_at is not None
        assert record.next_fire_at.astimezone().utcoffset() is not None
        assert record.next_fire_at == first_tick(dict(record.spec), record.created_at)
        assert record.next_fire_at.hour in (13, 14)  # 09:30 New York is 13:30 or 14:30 UTC


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine, settings=ApiSettings(stream_poll_seconds=0.2, auth_refresh_seconds=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trellis.test") as c:
        yield c


def _signed(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Trellis-Signature": signature,
        "X-Trellis-Delivery": delivery,
        "Content-Type": "application/json",
    }


class TestWebhooks:
    @pytest.fixture(autouse=True)
    def secret(self, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.setenv("HOOK_SECRET", "s3cret")
        return "s3cret"

    async def _hook(self, client: httpx.AsyncClient) -> None:
        await register(client, ORDERS)
        created = await client.post(
            "/v1/triggers",
            json={
                "name": "shop",
                "kind": "webhook",
                "workflow": "orders",
                "spec": {"secret": "env:HOOK_SECRET", "input": '{"order": body.order.id}'},
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["spec"]["secret"] == "env:HOOK_SECRET"

    async def test_a_signed_delivery_starts_a_run_from_the_mapped_body(
        self, client: httpx.AsyncClient, secret: str
    ) -> None:
        await self._hook(client)
        body = json.dumps({"order": {"id": "vip"}}).encode()
        answer = await client.post("/v1/hooks/shop", content=body, headers=_signed(secret, body, "d-1"))
        assert answer.status_code == 201, answer.text
        run = answer.json()
        assert (run["workflow"], run["status"], run["input"]) == ("orders", "queued", {"order": "vip"})
        assert run["options"]["trigger"] == {"name": "shop", "kind": "webhook", "delivery": "d-1"}

    async def test_a_replayed_delivery_id_starts_no_second_run(
        self, client: httpx.AsyncClient, engine: Engine, secret: str
    ) -> None:
        await self._hook(client)
        body = json.dumps({"order": {"id": "a"}}).encode()
        first = await client.post("/v1/hooks/shop", content=body, headers=_signed(secret, body, "d-7"))
        again = await client.post("/v1/hooks/shop", content=body, headers=_signed(secret, body, "d-7"))
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert len(await _runs(engine, "orders")) == 1

    async def test_a_wrong_or_missing_signature_is_refused_without_starting_a_run(
        self, client: httpx.AsyncClient, engine: Engine, secret: str
    ) -> None:
        await self._hook(client)
        body = json.dumps({"order": {"id": "a"}}).encode()
        forged = await client.post("/v1/hooks/shop", content=body, headers=_signed("guess", body, "d-1"))
        assert forged.status_code == 401
        assert forged.headers["content-type"] == "application/problem+json"
        unsigned = await client.post("/v1/hooks/shop", content=body, headers={"X-Trellis-Delivery": "d-2"})
        assert unsigned.status_code == 401
        assert await _runs(engine, "orders") == []

    async def test_bad_deliveries_are_explained(self, client: httpx.AsyncClient, secret: str) -> None:
        await self._hook(client)
        body = json.dumps({"order": {"id": "a"}}).encode()
        no_id = await client.post(
            "/v1/hooks/shop", content=body, headers={**_signed(secret, body, "x"), "X-Trellis-Delivery": ""}
        )
        assert no_id.status_code == 422
        assert "X-Trellis-Delivery" in no_id.json()["detail"]
        unmapped = json.dumps({"nothing": 1}).encode()
        failed = await client.post(
            "/v1/hooks/shop", content=unmapped, headers=_signed(secret, unmapped, "d-9")
        )
        assert failed.status_code == 422
        assert "input mapping" in failed.json()["detail"]
        missing = await client.post("/v1/hooks/nope", content=body, headers=_signed(secret, body, "d-1"))
        assert missing.status_code == 404
        await client.post("/v1/triggers/shop/pause")
        paused = await client.post("/v1/hooks/shop", content=body, headers=_signed(secret, body, "d-3"))
        assert paused.status_code == 409

    async def test_invalid_triggers_are_refused_naming_the_field(self, client: httpx.AsyncClient) -> None:
        await register(client, ORDERS)
        plain_secret = await client.post(
            "/v1/triggers",
            json={"name": "x", "kind": "webhook", "workflow": "orders", "spec": {"secret": "hunter2"}},
        )
        assert plain_secret.status_code == 422
        assert "/spec/secret" in plain_secret.json()["detail"]
        bad_cron = await client.post(
            "/v1/triggers",
            json={"name": "y", "kind": "schedule", "workflow": "orders", "spec": {"cron": "* *"}},
        )
        assert bad_cron.status_code == 422
        assert "/spec/cron" in bad_cron.json()["detail"]
        unknown = await client.post(
            "/v1/triggers",
            json={"name": "z", "kind": "schedule", "workflow": "nope", "spec": {"cron": "* * * * *"}},
        )
        assert unknown.status_code == 404


class TestCallbacks:
    async def test_the_final_run_document_is_posted_signed_retried_and_every_attempt_recorded(
        self, engine: Engine, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CB_SECRET", "cb-key")
        await register(client, ORDERS)
        worker = Worker(engine, concurrency=2, poll_seconds=0.05)
        running = asyncio.create_task(worker.run(grace_seconds=1))
        try:
            with AgentServer(agents={"cb": Behaviour(script=("error", "ok"))}) as receiver:
                created = await client.post(
                    "/v1/runs",
                    json={
                        "workflow": "orders",
                        "input": {"order": "vip"},
                        "callback": {"url": receiver.url("cb"), "secret": "env:CB_SECRET"},
                    },
                )
                assert created.status_code == 201, created.text
                run_id = created.json()["id"]
                await wait_for_status(client, run_id, "succeeded")
                dispatcher = CallbackDispatcher(engine, initial_backoff_seconds=0.05)
                async with httpx.AsyncClient() as http:
                    async with asyncio.timeout(10):
                        while receiver["cb"].count < 2:
                            await dispatcher.dispatch_due(http)
                            await asyncio.sleep(0.06)
                    assert await dispatcher.dispatch_due(http) == 0  # nothing left to deliver
                first, second = receiver["cb"].calls
                assert first.body == second.body
                document = json.loads(second.body)
                assert (document["id"], document["status"], document["output"]["seen"]) == (
                    run_id,
                    "succeeded",
                    "vip vip",
                )
                expected = "sha256=" + hmac.new(b"cb-key", second.body, hashlib.sha256).hexdigest()
                assert second.headers["x-trellis-signature"] == expected
                assert second.headers["x-trellis-delivery"].endswith(":run")
                assert second.headers["x-trellis-event"] == "run.succeeded"
        finally:
            worker.request_stop()
            await asyncio.wait_for(running, 10)
        record = (await client.get(f"/v1/runs/{run_id}/deliveries")).json()
        attempts = [(d["attempt"], d["ok"], d["status_code"], d["kind"]) for d in record["deliveries"]]
        assert attempts == [(1, False, 500, "run"), (2, True, 200, "run")]
        assert record["callback"]["delivered_seq"] > 0

    async def test_every_event_is_delivered_in_order_when_asked(
        self, engine: Engine, client: httpx.AsyncClient
    ) -> None:
        await register(client, ORDERS)
        with AgentServer(agents={"cb": Behaviour()}) as receiver:
            created = await client.post(
                "/v1/runs",
                json={
                    "workflow": "orders",
                    "input": {"order": "x"},
                    "callback": {"url": receiver.url("cb"), "events": True},
                },
            )
            run_id = created.json()["id"]
            await engine.execute(run_id)
            async with httpx.AsyncClient() as http:
                await CallbackDispatcher(engine).dispatch_due(http)
            kinds = [
                c.headers["x-trellis-event"] + ":" + c.headers["x-trellis-delivery"].rsplit(":", 1)[1]
                for c in receiver["cb"].calls
            ]
        events = [e.type for e in await engine.store.list_events(run_id)]
        assert kinds == [f"{t}:event" for t in events] + ["run.succeeded:run"]
        assert "x-trellis-signature" not in receiver["cb"].calls[0].headers  # no secret anywhere


class TestNodeExecution:
    async def test_one_node_runs_alone_and_answers_its_update_route_and_timing(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, ORDERS)
        answer = await client.post(
            "/v1/workflows/orders/nodes/route/execute", json={"state": {"order": "vip"}}
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["status"], result["type"], result["next"], result["update"]) == (
            "succeeded",
            "router",
            ["vip"],
            {},
        )
        assert result["duration_ms"] >= 0
        assert [e["type"] for e in result["events"]] == ["node.started", "node.succeeded"]
        setter = (
            await client.post("/v1/workflows/orders/nodes/plain/execute", json={"state": {"order": "o"}})
        ).json()
        assert (setter["update"], setter["next"]) == ({"seen": "plain o"}, [])

    async def test_a_failing_node_answers_its_error_and_unknown_nodes_are_404(
        self, client: httpx.AsyncClient, engine: Engine
    ) -> None:
        await register(client, ORDERS)
        engine.registry.broken.add("bad")  # type: ignore[attr-defined]
        failed = (
            await client.post("/v1/workflows/orders/nodes/boom/execute", json={"state": {"order": "bad"}})
        ).json()
        assert failed["status"] == "failed"
        assert "bad is broken" in failed["error"]["detail"]
        assert [e["type"] for e in failed["events"]] == ["node.started", "node.failed"]
        missing = await client.post("/v1/workflows/orders/nodes/nope/execute", json={"state": {}})
        assert missing.status_code == 404
        assert "route" in missing.json()["detail"]

    def test_trellis_node_exec_prints_the_result_as_json(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TRELLIS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
        monkeypatch.chdir(tmp_path)
        (tmp_path / "orders.yaml").write_text(ORDERS)
        runner = CliRunner()
        assert runner.invoke(cli_app, ["workflows", "register", "orders.yaml"]).exit_code == 0
        result = runner.invoke(
            cli_app, ["node", "exec", "orders", "vip", "--state", '{"order": "a"}', "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["update"] == {"seen": "vip a"}
        listed = runner.invoke(cli_app, ["schedules", "list", "--json"])
        assert listed.exit_code == 0
        assert json.loads(listed.stdout) == {"schedules": []}
