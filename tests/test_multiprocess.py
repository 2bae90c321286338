"""Several worker processes on one PostgreSQL database (DESIGN §5, §6).

Workers are real ``trellis worker`` processes; the test process plays the API (it queues runs
and follows their events). Executions are counted by a tool that appends to a file, outside
Trellis, so a duplicate execution cannot hide.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api_support import live_server, parse_sse
from engine_support import yaml
from trellis.api import create_app
from trellis.config import Settings
from trellis.runtime import Engine
from trellis.types import RunStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 3.0
"""Seconds; short so a takeover is quick, long enough that a busy 2-core machine never stalls a
live worker's heartbeat past it."""

TOOLS = """
import asyncio, os
from trellis.registry import registry

@registry.tool("mark")
async def mark(run: str, node: str, log: str, seconds: float) -> str:
    with open(log, "a") as fh:  # O_APPEND: one line per write, whole, across processes
        fh.write(f"{run} {node} {os.getpid()}\\n")
    await asyncio.sleep(seconds)
    return node
"""


def chain(name: str, nodes: int, log: Path, seconds: float) -> str:
    body = "\n".join(
        f"  n{i}: {{type: tool, tool: mark, args: {{run: input.tag, node: '\"n{i}\"', log: '\"{log}\"', "
        f"seconds: {seconds}}}{', next: n' + str(i + 1) if i < nodes - 1 else ''}}}"
        for i in range(nodes)
    )
    return yaml(f"name: {name}\ninput: {{type: object}}\nstart: n0\nnodes:\n{body}\n")


class Workers:
    """``trellis worker`` processes sharing one database."""

    def __init__(self, tmp_path: Path, url: str, lease_seconds: float) -> None:
        self.env = {
            **os.environ,
            "TRELLIS_DATABASE_URL": url,
            "TRELLIS_TOOLS": str(tmp_path / "tools.py"),
            "TRELLIS_LEASE_SECONDS": str(lease_seconds),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = tmp_path

    def start(self, concurrency: int = 8) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "trellis", "worker", "--concurrency", str(concurrency)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Workers]:
    (tmp_path / "tools.py").write_text(TOOLS)
    group = Workers(tmp_path, pg_url, lease_seconds=LEASE)
    try:
        yield group
    finally:
        group.stop()


def executions(log: Path) -> Counter[tuple[str, str]]:
    lines = log.read_text().split("\n") if log.exists() else []
    return Counter((run, node) for run, node, _ in (line.split() for line in lines if line))


def pids(log: Path) -> set[str]:
    return {line.split()[2] for line in log.read_text().splitlines() if line}


async def wait_all(engine: Engine, run_ids: list[str], within: float, workers: Workers) -> None:
    deadline = time.monotonic() + within
    pending = set(run_ids)
    while pending and time.monotonic() < deadline:
        runs, _ = await engine.store.list_runs(status=["succeeded", "failed", "cancelled"], limit=1000)
        pending -= {r.id for r in runs}
        await asyncio.sleep(0.2)
    assert not pending, f"{len(pending)} runs unfinished; workers said:\n{workers.output()[-3000:]}"


async def test_two_workers_complete_200_runs_each_exactly_once(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    log = tmp_path / "executions.log"
    async with Engine.open(Settings(database_url=pg_url)) as engine:
        await engine.register(chain("three", 3, log, 0.0))
        workers.start()
        workers.start()
        runs = [await engine.submit("three", {"tag": f"r{i}"}) for i in range(200)]
        await wait_all(engine, [r.id for r in runs], within=180, workers=workers)

        counts = executions(log)
        assert len(counts) == 600
        assert set(counts.values()) == {1}, [k for k, v in counts.items() if v != 1][:5]
        assert len(pids(log)) == 2, "both workers took runs"
        for run in runs[::20]:  # the event log of a sample: started once, succeeded once
            types = Counter(e.type for e in await engine.store.list_events(run.id))
            assert types["run.started"] == types["run.succeeded"] == 1
            assert types["node.started"] == types["node.succeeded"] == 3
        statuses = {(await engine.get_run(r.id)).status for r in runs}
        assert statuses == {RunStatus.SUCCEEDED}


async def test_a_killed_workers_run_is_resumed_by_another_within_the_lease(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    log = tmp_path / "executions.log"
    async with Engine.open(Settings(database_url=pg_url)) as engine:
        await engine.register(chain("five", 5, log, 0.5))
        procs = {str(workers.start().pid): None, str(workers.start().pid): None}
        deadline = time.monotonic() + 60
        while sum(w["alive"] for w in (await engine.queue_stats())["workers"]) < 2:
            assert time.monotonic() < deadline, workers.output()
            await asyncio.sleep(0.1)
        run = await engine.submit("five", {"tag": "victim"})
        async with engine.bus.subscribe(run.id) as events:  # fed by NOTIFY from the worker process
            seen: list[str] = []
            while "node.started:n2" not in seen:
                event = await asyncio.wait_for(events.get(), 30)
                assert event is not None
                seen.append(f"{event.type}:{event.node}" if event.node else event.type)
        assert seen[:2] == ["run.started", "node.started:n0"]
        holder = (await engine.get_run(run.id)).lease_owner
        assert holder is not None
        pid = holder.split(":")[1]
        assert pid in procs
        victim = next(p for p in workers.procs if str(p.pid) == pid)
        victim.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        victim.wait(timeout=10)

        await wait_all(engine, [run.id], within=60, workers=workers)
        done = await engine.get_run(run.id)
        assert done.status == RunStatus.SUCCEEDED
        resumed = next(e for e in await engine.store.list_events(run.id) if e.type == "run.resumed")
        assert (resumed.ts - killed_at).total_seconds() <= LEASE + 1.0
        counts = executions(log)
        events = await engine.store.list_events(run.id)
        before = events[: next(i for i, e in enumerate(events) if e.type == "run.resumed")]
        completed = {e.node for e in before if e.type == "node.succeeded"}
        in_flight = {e.node for e in before if e.type == "node.started"} - completed
        counts = executions(log)
        assert completed, "some nodes had completed before the kill"
        for node in completed:
            assert counts[("victim", node)] == 1, f"{node} completed before the kill but ran again"
        assert len(in_flight) == 1
        assert counts[("victim", in_flight.pop())] <= 2, "the node in flight ran at most twice"
        assert sum(counts.values()) <= 6
        assert pids(log) == set(procs), "the survivor finished the run"


async def test_sse_on_an_api_process_streams_events_written_by_a_worker_elsewhere(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    """The API process executes nothing; its stream is fed by NOTIFY from the worker process."""
    log = tmp_path / "executions.log"
    async with Engine.open(Settings(database_url=pg_url)) as engine:
        await engine.register(chain("streamed", 3, log, 0.2))
        async with live_server(create_app(engine)) as url:
            worker = workers.start()
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                response = await client.post("/v1/runs", json={"workflow": "streamed", "input": {"tag": "s"}})
                assert response.status_code == 201
                run_id = response.json()["id"]
                async with client.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
                    body = "".join(
                        [chunk async for chunk in stream.aiter_text()]
                    )  # ends after the last event
        frames = parse_sse(body)
        assert [f["data"]["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert [f["event"] for f in frames][-1] == "run.succeeded"
        assert sum(f["event"] == "node.succeeded" for f in frames) == 3
        assert pids(log) == {str(worker.pid)}
