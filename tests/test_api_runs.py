"""trellis.api runs: create (idempotency, wait), list (filters, cursor), read a run's records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api_support import CHAIN, GATE, HELLO, register, wait_for_status
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine


class TestCreate:
    async def test_a_run_is_answered_201_queued_at_once(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        response = await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": "Ada"}})
        assert response.status_code == 201
        run = response.json()
        assert (run["status"], run["workflow"], run["version"], run["input"]) == (
            "queued",
            "hello",
            1,
            {"name": "Ada"},
        )
        assert response.headers["location"] == f"/v1/runs/{run['id']}"
        assert {"output", "error", "created_at", "waiting_for"} <= set(run)

    async def test_name_at_version_pins_that_version(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        await register(client, HELLO.replace("Greets", "Welcomes"))
        run = (await client.post("/v1/runs", json={"workflow": "hello@1", "input": {"name": "A"}})).json()
        assert run["version"] == 1

    async def test_input_that_breaks_the_schema_is_a_422_naming_the_json_path(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, HELLO)
        response = await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": 5}})
        assert response.status_code == 422
        problem = response.json()
        assert problem["details"]["path"] == "/name"
        assert "run input at /name" in problem["detail"]

    async def test_an_unknown_workflow_is_a_404(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/runs", json={"workflow": "nope@3"})
        assert response.status_code == 404
        assert "'nope@3'" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("body", "locations"),
        [
            (
                {"workflow": 3, "input": [], "priority": "high"},
                ["body.workflow", "body.input", "body.priority"],
            ),
            ({"input": {}}, ["body.workflow"]),
            ({"workflow": "hello", "inputs": {}}, ["body.inputs"]),
            ({"workflow": "hello", "wait": True, "wait_timeout": -1}, ["body.wait_timeout"]),
        ],
    )
    async def test_wrong_types_are_a_422_listing_every_field_with_its_location(
        self, client: httpx.AsyncClient, body: dict[str, object], locations: list[str]
    ) -> None:
        response = await client.post("/v1/runs", json=body)
        assert response.status_code == 422
        assert [e["location"] for e in response.json()["errors"]] == locations

    @pytest.mark.parametrize("body", ['{"workflow": ', "not json", '{"workflow": "a",}'])
    async def test_malformed_json_is_a_400(self, client: httpx.AsyncClient, body: str) -> None:
        response = await client.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"] == "MalformedRequest"
        assert "not valid JSON" in response.json()["detail"]


class TestIdempotency:
    async def test_the_same_key_and_body_answer_the_same_run_with_200(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, HELLO)
        body = {"workflow": "hello", "input": {"name": "Ada"}}
        first = await client.post("/v1/runs", json=body, headers={"Idempotency-Key": "order-17"})
        again = await client.post("/v1/runs", json=body, headers={"Idempotency-Key": "order-17"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        listed = (await client.get("/v1/runs")).json()["runs"]
        assert len(listed) == 1

    async def test_the_same_key_with_another_body_is_a_409_naming_the_run(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, HELLO)
        first = await client.post(
            "/v1/runs", json={"workflow": "hello", "input": {"name": "Ada"}}, headers={"Idempotency-Key": "k"}
        )
        other = await client.post(
            "/v1/runs", json={"workflow": "hello", "input": {"name": "Bob"}}, headers={"Idempotency-Key": "k"}
        )
        assert other.status_code == 409
        problem = other.json()
        assert problem["details"] == {"idempotency_key": "k", "run_id": first.json()["id"]}
        assert "different request" in problem["detail"]

    async def test_concurrent_requests_with_one_key_create_one_run(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        body = {"workflow": "hello", "input": {"name": "Ada"}}
        responses = await asyncio.gather(
            *(client.post("/v1/runs", json=body, headers={"Idempotency-Key": "race"}) for _ in range(5))
        )
        assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
        assert len({r.json()["id"] for r in responses}) == 1

    async def test_a_key_longer_than_255_characters_is_a_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/runs", json={"workflow": "x"}, headers={"Idempotency-Key": "k" * 256}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["location"] == "header.idempotency-key"


class TestWait:
    async def test_wait_answers_the_finished_run(self, client: httpx.AsyncClient, worker: Worker) -> None:
        await register(client, HELLO)
        response = await client.post(
            "/v1/runs", json={"workflow": "hello", "input": {"name": "Ada"}, "wait": True}
        )
        assert response.status_code == 201
        run = response.json()
        assert run["status"] == "succeeded"
        assert run["output"]["greeting"] == "hello Ada"

    async def test_wait_returns_when_the_run_parks_at_an_approval(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        await register(client, GATE)
        run = (await client.post("/v1/runs", json={"workflow": "gate", "wait": True})).json()
        assert run["status"] == "waiting"
        assert run["waiting_for"]["interrupts"][0]["node"] == "approve"

    async def test_wait_is_bounded_by_wait_timeout(
        self, client: httpx.AsyncClient, worker: Worker, api_tools: Registry
    ) -> None:
        await register(client, CHAIN)
        started = asyncio.get_running_loop().time()
        run = (
            await client.post("/v1/runs", json={"workflow": "chain", "wait": True, "wait_timeout": 0.5})
        ).json()
        assert 0.4 < asyncio.get_running_loop().time() - started < 3
        assert run["status"] in ("queued", "running")
        api_tools.release.set()  # type: ignore[attr-defined]
        await wait_for_status(client, run["id"], "succeeded")


class TestList:
    async def test_filters_by_status_workflow_and_creation_time(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        await register(client, GATE)
        hello = (await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": "A"}})).json()
        gate = (await client.post("/v1/runs", json={"workflow": "gate"})).json()
        await client.post(f"/v1/runs/{gate['id']}/cancel")

        async def ids(**params: object) -> list[str]:
            response = await client.get("/v1/runs", params=params)  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            return [r["id"] for r in response.json()["runs"]]

        assert await ids() == [gate["id"], hello["id"]]
        assert await ids(status="cancelled") == [gate["id"]]
        assert await ids(status=["queued", "cancelled"]) == [gate["id"], hello["id"]]
        assert await ids(workflow="hello") == [hello["id"]]
        assert await ids(created_after=hello["created_at"]) == [gate["id"]]
        assert await ids(created_before=gate["created_at"]) == [hello["id"]]
        future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()
        assert await ids(created_after=future) == []

    async def test_the_cursor_pages_through_every_run_once(self, client: httpx.AsyncClient) -> None:
        await register(client, HELLO)
        created = [
            (await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": str(i)}})).json()[
                "id"
            ]
            for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/runs", params=params)).json()
            seen += [r["id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == created[::-1]

    @pytest.mark.parametrize(
        ("params", "location"),
        [
            ({"status": "sleeping"}, "query.status.0"),
            ({"limit": 0}, "query.limit"),
            ({"limit": "many"}, "query.limit"),
            ({"created_after": "yesterday"}, "query.created_after"),
        ],
    )
    async def test_bad_query_parameters_are_422_naming_them(
        self, client: httpx.AsyncClient, params: dict[str, object], location: str
    ) -> None:
        response = await client.get("/v1/runs", params=params)  # type: ignore[arg-type]
        assert response.status_code == 422
        assert response.json()["errors"][0]["location"] == location

    async def test_a_bad_cursor_is_a_422_not_a_500(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/runs", params={"cursor": "not-a-cursor"})
        assert response.status_code == 422
        assert "invalid cursor" in response.json()["detail"]


class TestRead:
    async def test_a_run_its_nodes_events_state_history_and_diff(
        self, client: httpx.AsyncClient, api_engine: Engine, worker: Worker
    ) -> None:
        await register(client, HELLO)
        run = (
            await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": "Ada"}, "wait": True})
        ).json()
        run_id = run["id"]
        assert (await client.get(f"/v1/runs/{run_id}")).json() == run

        nodes = (await client.get(f"/v1/runs/{run_id}/nodes")).json()["nodes"]
        assert [(n["node"], n["status"]) for n in nodes] == [("greet", "succeeded")]

        events = (await client.get(f"/v1/runs/{run_id}/events")).json()
        types = [e["type"] for e in events["events"]]
        assert (types[0], types[-1]) == ("run.queued", "run.succeeded")
        assert events["next_after"] is None
        page = (await client.get(f"/v1/runs/{run_id}/events", params={"after": 1, "limit": 2})).json()
        assert [e["seq"] for e in page["events"]] == [2, 3]
        assert page["next_after"] == 3

        state = (await client.get(f"/v1/runs/{run_id}/state")).json()
        assert state["values"]["greeting"] == "hello Ada"
        versions = (await client.get(f"/v1/runs/{run_id}/history")).json()["versions"]
        assert versions[0]["checkpoint_id"] == state["checkpoint_id"]
        assert (
            len((await client.get(f"/v1/runs/{run_id}/history", params={"limit": 1})).json()["versions"]) == 1
        )
        diff = (await client.get(f"/v1/runs/{run_id}/history/{state['checkpoint_id']}/diff")).json()
        assert {"op": "add", "path": "/greeting", "new": "hello Ada"} in diff["changes"]

    async def test_unknown_runs_and_checkpoints_are_404(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        for suffix in ("", "/nodes", "/events", "/state", "/history", "/history/x/diff", "/stream"):
            response = await client.get(f"/v1/runs/0000/{suffix.lstrip('/')}".rstrip("/"))
            assert response.status_code == 404, suffix
            assert "'0000'" in response.json()["detail"]
        await register(client, HELLO)
        run = (
            await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": "A"}, "wait": True})
        ).json()
        response = await client.get(f"/v1/runs/{run['id']}/history/not-a-checkpoint/diff")
        assert response.status_code == 404
        assert "not-a-checkpoint" in response.json()["detail"]
        checkpoint = (await client.get(f"/v1/runs/{run['id']}/state")).json()["checkpoint_id"]
        against = await client.get(
            f"/v1/runs/{run['id']}/history/{checkpoint}/diff", params={"against": "nope"}
        )
        assert against.status_code == 404

    async def test_negative_after_is_a_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/runs/x/events", params={"after": -1})
        assert response.status_code == 422
