"""trellis.api run actions: approve/reject, cancel, pause/resume, retry, rollback — and when they conflict."""

from __future__ import annotations

import httpx

from api_support import CHAIN, GATE, HELLO, register, wait_for_status
from trellis.queue import Worker
from trellis.registry import Registry

ON_ITS_WAY = ("queued", "running", "succeeded")
"""A run queued again by an action: the worker may have taken it before the answer was written."""


async def start(client: httpx.AsyncClient, definition: str, name: str, **body: object) -> dict[str, object]:
    await register(client, definition)
    response = await client.post("/v1/runs", json={"workflow": name, **body})
    assert response.status_code == 201, response.text
    run: dict[str, object] = response.json()
    return run


class TestApproval:
    async def test_approve_records_who_and_why_and_the_run_continues(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        assert run["status"] == "waiting"
        response = await client.post(
            f"/v1/runs/{run['id']}/approve", json={"comment": "looks right", "data": {"note": "ok"}}
        )
        assert response.status_code == 200
        assert response.json()["status"] in ON_ITS_WAY
        done = await wait_for_status(client, str(run["id"]), "succeeded")
        decision = done["output"]["decision"]
        assert (decision["approved"], decision["by"], decision["comment"], decision["data"]) == (
            True,
            "anonymous",
            "looks right",
            {"note": "ok"},
        )

    async def test_reject_without_a_body_continues_on_the_reject_path(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        response = await client.post(f"/v1/runs/{run['id']}/reject")
        assert response.status_code == 200
        done = await wait_for_status(client, str(run["id"]), "succeeded")
        assert done["output"]["decision"]["approved"] is False

    async def test_approving_a_run_that_is_not_waiting_is_a_409_that_says_why(
        self, client: httpx.AsyncClient
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"})
        response = await client.post(f"/v1/runs/{run['id']}/approve", json={})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert "is queued and not waiting for an approval" in response.json()["detail"]

    async def test_data_that_breaks_the_form_is_a_422(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        response = await client.post(f"/v1/runs/{run['id']}/approve", json={"data": {"note": 5}})
        assert response.status_code == 422
        assert "note" in response.json()["detail"]

    async def test_an_unknown_field_or_node_is_refused(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        typo = await client.post(f"/v1/runs/{run['id']}/approve", json={"coment": "x"})
        assert typo.status_code == 422
        assert typo.json()["errors"][0]["location"] == "body.coment"
        elsewhere = await client.post(f"/v1/runs/{run['id']}/approve", json={"node": "nope"})
        assert elsewhere.status_code == 409
        assert "no open approval at node 'nope'" in elsewhere.json()["detail"]


class TestCancelPauseResume:
    async def test_a_queued_run_is_cancelled_at_once_with_200(self, client: httpx.AsyncClient) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"})
        response = await client.post(f"/v1/runs/{run['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        again = await client.post(f"/v1/runs/{run['id']}/cancel")
        assert again.status_code == 409
        assert "already cancelled" in again.json()["detail"]

    async def test_a_running_run_answers_202_and_ends_cancelled(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, CHAIN, "chain")
        await wait_for_status(client, str(run["id"]), "running")
        response = await client.post(f"/v1/runs/{run['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "running"
        await wait_for_status(client, str(run["id"]), "cancelled")

    async def test_pause_then_resume_a_queued_run(self, client: httpx.AsyncClient) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"})
        paused = await client.post(f"/v1/runs/{run['id']}/pause")
        assert (paused.status_code, paused.json()["status"]) == (200, "paused")
        resumed = await client.post(f"/v1/runs/{run['id']}/resume")
        assert (resumed.status_code, resumed.json()["status"]) == (200, "queued")

    async def test_pausing_a_finished_run_is_a_409(self, client: httpx.AsyncClient, worker: Worker) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        response = await client.post(f"/v1/runs/{run['id']}/pause")
        assert response.status_code == 409
        assert "only a running or queued run can be paused" in response.json()["detail"]
        resume = await client.post(f"/v1/runs/{run['id']}/resume")
        assert resume.status_code == 409

    async def test_actions_on_unknown_runs_are_404(self, client: httpx.AsyncClient) -> None:
        for action in ("cancel", "pause", "resume", "retry", "approve", "reject"):
            assert (await client.post(f"/v1/runs/nope/{action}")).status_code == 404, action
        response = await client.post("/v1/runs/nope/rollback", json={"checkpoint_id": "c"})
        assert response.status_code == 404


class TestRetryAndRollback:
    async def test_retry_continues_a_failed_run_from_the_failed_node(
        self, client: httpx.AsyncClient, worker: Worker, api_tools: Registry
    ) -> None:
        api_tools.release.set()  # type: ignore[attr-defined]
        api_tools.broken.add("c")  # type: ignore[attr-defined]
        run = await start(client, CHAIN, "chain", wait=True)
        assert run["status"] == "failed"
        assert (await client.post(f"/v1/runs/{run['id']}/rollback", json={})).status_code == 422
        api_tools.broken.clear()  # type: ignore[attr-defined]
        response = await client.post(f"/v1/runs/{run['id']}/retry")
        assert response.status_code == 200
        assert response.json()["status"] in ON_ITS_WAY
        done = await wait_for_status(client, str(run["id"]), "succeeded")
        assert done["output"]["log"] == ["a", "held", "c"]
        again = await client.post(f"/v1/runs/{run['id']}/retry")
        assert again.status_code == 409
        assert "only a failed run can be retried" in again.json()["detail"]

    async def test_rollback_forks_from_a_version_and_runs_again_from_there(
        self, client: httpx.AsyncClient, worker: Worker, api_tools: Registry
    ) -> None:
        api_tools.release.set()  # type: ignore[attr-defined]
        run = await start(client, CHAIN, "chain", wait=True)
        versions = (await client.get(f"/v1/runs/{run['id']}/history")).json()["versions"]
        before_c = next(v for v in versions if v["next"] == ["c"])
        response = await client.post(
            f"/v1/runs/{run['id']}/rollback", json={"checkpoint_id": before_c["checkpoint_id"]}
        )
        assert response.status_code == 200
        assert response.json()["status"] in ON_ITS_WAY
        done = await wait_for_status(client, str(run["id"]), "succeeded")
        assert done["output"]["log"] == ["a", "held", "c"]
        unknown = await client.post(f"/v1/runs/{run['id']}/rollback", json={"checkpoint_id": "nope"})
        assert unknown.status_code == 404
        assert "no state version 'nope'" in unknown.json()["detail"]
