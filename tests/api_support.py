"""Helpers for the API tests: definitions, a tool registry the tests steer, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from trellis.registry import Registry

HELLO = textwrap.dedent(
    """
    name: hello
    description: Greets someone.
    input: {type: object, required: [name], properties: {name: {type: string}}}
    state: {name: {type: string}, greeting: {type: string}}
    start: greet
    nodes:
      greet: {type: set, values: {greeting: '"hello " + state.name'}}
    """
)

CHAIN = textwrap.dedent(
    """
    name: chain
    state: {log: {reducer: append}}
    start: a
    nodes:
      a: {type: tool, tool: step, args: {name: '"a"'}, output: {log: '[result]'}, next: hold}
      hold: {type: tool, tool: hold, output: {log: '[result]'}, next: c}
      c: {type: tool, tool: step, args: {name: '"c"'}, output: {log: '[result]'}}
    """
)
"""``hold`` blocks until the test sets ``registry.release``; ``step`` fails for names in ``broken``."""

GATE = textwrap.dedent(
    """
    name: gate
    state: {decision: {}, done: {type: boolean}}
    start: approve
    nodes:
      approve:
        type: approval
        title: "Ship it?"
        form: {type: object, properties: {note: {type: string}}}
        on_reject: continue
        output: {decision: result}
        next: finish
      finish: {type: set, values: {done: true}}
    """
)


def steerable_tools() -> Registry:
    """``step`` (fails for names in ``registry.broken``) and ``hold`` (waits for ``registry.release``)."""
    registry = Registry()
    registry.broken = set()  # type: ignore[attr-defined]
    registry.release = asyncio.Event()  # type: ignore[attr-defined]

    @registry.tool("step")
    def step(name: str) -> str:
        if name in registry.broken:  # type: ignore[attr-defined]
            raise RuntimeError(f"{name} is broken")
        return name

    @registry.tool("hold")
    async def hold() -> str:
        await registry.release.wait()  # type: ignore[attr-defined]
        return "held"

    return registry


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port, in this event loop; yields its URL."""
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.trellis.close_streams()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The frames of an SSE body: ``{"id", "event", "data"}`` (data parsed as JSON)."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            frames.append(
                {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
            )
    return frames


async def register(client: httpx.AsyncClient, definition: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/workflows", content=definition, headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_status(
    client: httpx.AsyncClient, run_id: str, *statuses: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll ``GET /v1/runs/{id}`` (for at most 10 s) until the run has one of ``statuses``."""
    async with asyncio.timeout(10):
        while True:
            run: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
            if run["status"] in statuses:
                return run
            await asyncio.sleep(0.02)
