"""trellis.api streams: SSE and WebSocket replay + live, exactly once and in order across reconnects."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api_support import CHAIN, GATE, HELLO, live_server, parse_sse, register, wait_for_status
from trellis.auth import Role, create_key
from trellis.cli import app as cli
from trellis.cli._follow import follow_http, sse_frames
from trellis.queue import Worker
from trellis.registry import Registry
from trellis.runtime import Engine

REVIEW = textwrap.dedent(
    """
    name: review
    state: {log: {reducer: append}, decision: {}}
    start: a
    nodes:
      a: {type: tool, tool: step, args: {name: '"a"'}, output: {log: '[result]'}, next: hold}
      hold: {type: tool, tool: hold, output: {log: '[result]'}, next: approve}
      approve: {type: approval, title: "ok?", output: {decision: result}, next: c}
      c: {type: tool, tool: step, args: {name: '"c"'}, output: {log: '[result]'}}
    """
)
"""Blocks at ``hold`` (until ``release``), then parks at ``approve``: a stream sees both phases."""


@pytest.fixture
async def server(app: FastAPI) -> AsyncIterator[str]:
    async with live_server(app) as url:
        yield url


async def stored_seqs(engine: Engine, run_id: str) -> list[int]:
    return [e.seq for e in await engine.store.list_events(run_id)]


async def start(client: httpx.AsyncClient, definition: str, name: str, **body: Any) -> dict[str, Any]:
    await register(client, definition)
    response = await client.post("/v1/runs", json={"workflow": name, **body})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


class TestSseReplay:
    async def test_a_finished_run_replays_every_event_as_frames_and_the_stream_ends(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        response = await client.get(f"/v1/runs/{run['id']}/stream")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        frames = parse_sse(response.text)
        events = (await client.get(f"/v1/runs/{run['id']}/events")).json()["events"]
        assert [f["data"] for f in frames] == events
        assert [f["id"] for f in frames] == [str(e["seq"]) for e in events]
        assert [f["event"] for f in frames] == [e["type"] for e in events]
        assert frames[-1]["event"] == "run.succeeded"

    async def test_last_event_id_wins_over_after_and_both_resume_after_that_seq(
        self, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        url = f"/v1/runs/{run['id']}/stream"
        after = parse_sse((await client.get(url, params={"after": 3})).text)
        assert after[0]["id"] == "4"
        resumed = parse_sse((await client.get(url, params={"after": 1}, headers={"Last-Event-ID": "2"})).text)
        assert resumed[0]["id"] == "3"
        assert parse_sse((await client.get(url, params={"after": 999})).text) == []

    async def test_an_unknown_run_is_a_404_problem_before_any_frame(self, client: httpx.AsyncClient) -> None:
        """The replay's first page is read before the run: an empty one must still find no run."""
        for params in ({}, {"after": 5}):
            response = await client.get("/v1/runs/no-such-run/stream", params=params)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert "no-such-run" in response.json()["detail"]

    @pytest.mark.parametrize(("headers", "params"), [({"Last-Event-ID": "abc"}, {}), ({}, {"after": "-1"})])
    async def test_a_bad_resume_point_is_a_422(
        self, client: httpx.AsyncClient, worker: Worker, headers: dict[str, str], params: dict[str, str]
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        response = await client.get(f"/v1/runs/{run['id']}/stream", headers=headers, params=params)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"


class TestSseLive:
    async def test_a_dropped_stream_resumes_with_last_event_id_and_misses_nothing(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_tools: Registry, api_engine: Engine
    ) -> None:
        """Drop mid-run, let events happen while away, reconnect, then get live ones: each once, in order."""
        run = await start(client, REVIEW, "review")
        seen: list[int] = []
        async with httpx.AsyncClient(base_url=server, timeout=10) as http:
            async with http.stream("GET", f"/v1/runs/{run['id']}/stream") as response:
                async for frame in sse_frames(response.aiter_lines()):
                    event = json.loads("\n".join(frame.data))
                    assert frame.id == str(event["seq"])
                    seen.append(event["seq"])
                    if (frame.event, event["node"]) == ("node.started", "hold"):
                        break  # drop the connection mid-run
            api_tools.release.set()  # type: ignore[attr-defined]
            await wait_for_status(client, run["id"], "waiting")  # events happened while disconnected

            async def approve_soon() -> None:
                await asyncio.sleep(0.3)
                assert (await client.post(f"/v1/runs/{run['id']}/approve")).status_code == 200

            approving = asyncio.create_task(approve_soon())
            headers = {"Last-Event-ID": str(seen[-1])}
            async with http.stream("GET", f"/v1/runs/{run['id']}/stream", headers=headers) as response:
                async for frame in sse_frames(response.aiter_lines()):
                    seen.append(json.loads("\n".join(frame.data))["seq"])
            await approving
        assert seen == await stored_seqs(api_engine, run["id"])
        assert seen == list(range(1, len(seen) + 1))
        assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "succeeded"

    async def test_a_parked_stream_stays_open_with_keep_alives_and_ends_when_the_run_does(
        self, server: str, client: httpx.AsyncClient, worker: Worker
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        lines: list[str] = []
        async with (
            httpx.AsyncClient(base_url=server, timeout=10) as http,
            http.stream("GET", f"/v1/runs/{run['id']}/stream") as response,
        ):
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": keep-alive" and lines.count(line) == 2:
                    assert (await client.post(f"/v1/runs/{run['id']}/cancel")).status_code == 200
        assert lines.count(": keep-alive") >= 2
        assert [line for line in lines if line.startswith("event: ")][-1] == "event: run.cancelled"

    async def test_follow_http_prints_every_event_once(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_tools: Registry, api_engine: Engine
    ) -> None:
        run = await start(client, CHAIN, "chain")
        received: list[dict[str, Any]] = []
        following = asyncio.create_task(follow_http(server, run["id"], received.append))
        await wait_for_status(client, run["id"], "running")
        api_tools.release.set()  # type: ignore[attr-defined]
        await asyncio.wait_for(following, 10)
        assert [e["seq"] for e in received] == await stored_seqs(api_engine, run["id"])

    async def test_the_cli_follows_over_http_one_json_line_per_event(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_tools: Registry, api_engine: Engine
    ) -> None:
        run = await start(client, CHAIN, "chain")
        args = ["runs", "events", run["id"], "--follow", "--server", server, "--json"]
        invoking = asyncio.create_task(asyncio.to_thread(CliRunner().invoke, cli, args))
        await asyncio.sleep(0.3)
        api_tools.release.set()  # type: ignore[attr-defined]
        result = await asyncio.wait_for(invoking, 15)
        assert result.exit_code == 0, result.output
        printed = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["seq"] for e in printed] == await stored_seqs(api_engine, run["id"])
        assert printed[-1]["type"] == "run.succeeded"
        listing = ["runs", "events", run["id"], "--server", server, "--json", "--after", "2"]
        listed = await asyncio.to_thread(CliRunner().invoke, cli, listing)
        assert [e["seq"] for e in json.loads(listed.stdout)] == [e["seq"] for e in printed][2:]


def ws_url(server: str, path: str) -> str:
    return "ws" + server.removeprefix("http") + path


async def receive_all(socket: Any) -> list[dict[str, Any]]:
    messages = []
    try:
        async for message in socket:
            messages.append(json.loads(message))
    except ConnectionClosed:
        pass
    return messages


class TestWebSocket:
    async def test_replay_then_live_until_the_run_finished(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_engine: Engine
    ) -> None:
        run = await start(client, GATE, "gate", wait=True)
        async with connect(ws_url(server, f"/v1/runs/{run['id']}/ws")) as socket:
            first = json.loads(await socket.recv())
            assert (first["seq"], first["type"]) == (1, "run.queued")
            assert (await client.post(f"/v1/runs/{run['id']}/approve")).status_code == 200
            rest = await receive_all(socket)
            assert socket.close_code == 1000
        seqs = [first["seq"]] + [m["seq"] for m in rest]
        assert seqs == await stored_seqs(api_engine, run["id"])
        assert rest[-1]["type"] == "run.succeeded"

    async def test_the_ws_alias_resumes_after_a_seq_by_query_or_subscribe_message(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_engine: Engine
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        stored = await stored_seqs(api_engine, run["id"])
        async with connect(ws_url(server, f"/ws?run={run['id']}&after=2")) as socket:
            assert [m["seq"] for m in await receive_all(socket)] == stored[2:]
        async with connect(ws_url(server, "/ws")) as socket:
            await socket.send(json.dumps({"subscribe": run["id"], "after": 3}))
            assert [m["seq"] for m in await receive_all(socket)] == stored[3:]
        async with connect(ws_url(server, "/ws")) as socket:
            await socket.send("hello?")
            problem = json.loads(await socket.recv())
            assert problem["status"] == 422
            await receive_all(socket)
            assert socket.close_code == 4422

    async def test_an_unknown_run_closes_with_4404_after_a_problem_message(self, server: str) -> None:
        async with connect(ws_url(server, "/v1/runs/nope/ws")) as socket:
            problem = json.loads(await socket.recv())
            assert (problem["status"], problem["error"]) == (404, "NotFound")
            await receive_all(socket)
            assert socket.close_code == 4404

    async def test_with_keys_a_socket_needs_one(
        self, server: str, client: httpx.AsyncClient, worker: Worker, api_engine: Engine
    ) -> None:
        run = await start(client, HELLO, "hello", input={"name": "A"}, wait=True)
        viewer = (await create_key(api_engine.store, name="watcher", role=Role.VIEWER)).secret
        async with connect(ws_url(server, f"/v1/runs/{run['id']}/ws")) as socket:
            await receive_all(socket)
            assert socket.close_code == 4401
        async with connect(ws_url(server, f"/v1/runs/{run['id']}/ws?api_key={viewer}")) as socket:
            assert len(await receive_all(socket)) == len(await stored_seqs(api_engine, run["id"]))
        headers = {"Authorization": f"Bearer {viewer}"}
        async with connect(ws_url(server, f"/v1/runs/{run['id']}/ws"), additional_headers=headers) as socket:
            assert (await receive_all(socket))[-1]["type"] == "run.succeeded"
        sse = await client.get(f"/v1/runs/{run['id']}/stream", params={"api_key": viewer})
        assert sse.status_code == 200


class TestEventsCommand:
    def test_without_a_server_it_tails_the_database_and_with_one_lists_over_http(
        self, database_url: str
    ) -> None:
        async def finished_run() -> tuple[str, list[int]]:
            from trellis.config import Settings

            async with Engine.open(Settings(database_url=database_url), registry=Registry()) as engine:
                record = await engine.register(HELLO)
                run = await engine.submit(f"hello@{record.version}", {"name": "A"})
                await engine.execute(run.id)
                return run.id, await stored_seqs(engine, run.id)

        run_id, seqs = asyncio.run(finished_run())
        runner = CliRunner()
        followed = runner.invoke(
            cli, ["--database-url", database_url, "runs", "events", run_id, "--follow", "--json"]
        )
        assert followed.exit_code == 0, followed.output
        assert [json.loads(line)["seq"] for line in followed.stdout.splitlines()] == seqs
        unknown = runner.invoke(cli, ["--database-url", database_url, "runs", "events", "nope", "--follow"])
        assert unknown.exit_code == 2
