"""trellis.api operations: probes, the queue, the OpenAPI document; `trellis serve` end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import trellis.store
from api_support import HELLO, register
from trellis.queue import Worker

MIGRATIONS = Path(trellis.store.__file__).parent / "migrations" / "versions"


class TestProbes:
    async def test_healthz_answers_while_the_process_lives(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok"}

    async def test_readyz_needs_a_live_worker(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 503
        problem = response.json()
        assert problem["detail"] == "not ready: worker check failed"
        assert problem["checks"]["database"]["ok"] is True
        head = sorted(p.stem[1:5] for p in MIGRATIONS.glob("r[0-9][0-9][0-9][0-9]_*.py"))[-1]
        assert problem["checks"]["migrations"] == {"ok": True, "current": head, "head": head}

    async def test_readyz_is_200_with_a_worker(self, client: httpx.AsyncClient, worker: Worker) -> None:
        async with asyncio.timeout(5):
            while (response := await client.get("/readyz")).status_code != 200:
                pass
        assert response.json()["checks"]["worker"] == {"ok": True, "alive": 1}

    async def test_the_queue_shows_depth_and_workers(self, client: httpx.AsyncClient, worker: Worker) -> None:
        await register(client, HELLO)
        await client.post("/v1/runs", json={"workflow": "hello", "input": {"name": "A"}, "wait": True})
        stats = (await client.get("/v1/queue")).json()
        assert {"depth", "workers"} <= set(stats)
        assert [w["alive"] for w in stats["workers"]] == [True]


class TestOpenApi:
    async def test_the_document_builds_and_lists_every_route(self, client: httpx.AsyncClient) -> None:
        document = (await client.get("/openapi.json")).json()
        paths = document["paths"]
        for path in (
            "/v1/workflows",
            "/v1/workflows/{name}",
            "/v1/workflows/{name}/versions/{version}",
            "/v1/workflows/{name}/graph",
            "/v1/runs",
            "/v1/runs/{run_id}",
            "/v1/runs/{run_id}/nodes",
            "/v1/runs/{run_id}/events",
            "/v1/runs/{run_id}/stream",
            "/v1/runs/{run_id}/state",
            "/v1/runs/{run_id}/history",
            "/v1/runs/{run_id}/history/{checkpoint_id}/diff",
            "/v1/runs/{run_id}/approve",
            "/v1/runs/{run_id}/rollback",
            "/v1/queue",
            "/healthz",
            "/readyz",
        ):
            assert path in paths, path
        assert "application/yaml" in paths["/v1/workflows"]["post"]["requestBody"]["content"]
        assert "RunCreate" in document["components"]["schemas"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_runs_api_and_worker_in_one_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`trellis serve` on SQLite with no setup: a run goes from POST to succeeded; SIGTERM exits 0."""
    port = free_port()
    env = {**os.environ, "TRELLIS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 't.db'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "trellis", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        registered = httpx.post(
            f"{base}/v1/workflows", content=HELLO, headers={"Content-Type": "application/yaml"}
        )
        assert registered.status_code == 201
        run = httpx.post(
            f"{base}/v1/runs", json={"workflow": "hello", "input": {"name": "Ada"}, "wait": True}, timeout=30
        ).json()
        assert (run["status"], run["output"]["greeting"]) == ("succeeded", "hello Ada")
        stream = httpx.get(f"{base}/v1/runs/{run['id']}/stream", timeout=10)
        assert "event: run.succeeded" in stream.text
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert "SIGTERM: stopping" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
