"""The client side of the service benchmark: drives ``POST /v1/runs`` and ``/stream`` over HTTP.

Three workloads, each a block of runs whose results come back as plain JSON-able dataclasses:

* :func:`wait_block` — ``concurrency`` callers, each posting ``{"wait": true}`` runs back to
  back until the block's runs are used up; a run counts once its answer says ``succeeded``.
* :func:`follow_block` — the same callers, but each posts without waiting and follows the run on
  ``GET /v1/runs/{id}/stream`` until its terminal event (what a UI does).
* :func:`stream_block` — one caller: post, open the stream as soon as the ``201`` is in, time the
  first ``data:`` frame and the terminal one, and keep the run's server-side timestamps.

The same code runs in the benchmark's own process (:class:`InProcessClient`) or in a child
process (:class:`SubprocessClient`, ``python -m benchmarks._load URL WORKFLOW``, one JSON request per
line on stdin, one JSON answer per line on stdout), so the benchmark can measure what a client
sharing the server's event loop costs the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

WAIT_TIMEOUT_SECONDS = 20.0
"""``wait_timeout`` of every waiting ``POST``: a run still ``running`` after it counts as failed."""
HTTP_TIMEOUT_SECONDS = 60.0
TERMINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
ROOT = Path(__file__).resolve().parent.parent


class RunFailed(RuntimeError):
    """A benchmark run did not end ``succeeded``: the measurement would be meaningless."""


@dataclass(frozen=True, slots=True)
class Block:
    """A block of runs driven at some concurrency: wall time, per-run latency, client CPU."""

    runs: int
    wall_s: float
    latency_ms: list[float]
    """POST sent → ``succeeded`` seen, per run, in completion order."""
    cpu_ms: float
    """CPU the driving process spent during the block (all its threads)."""

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.wall_s


@dataclass(frozen=True, slots=True)
class Timeline:
    """One run of :func:`stream_block`, in ms from sending its POST: client readings, and the
    server's event timestamps (same machine, same clock; an event is stamped when the store call
    writing it starts)."""

    queued_ms: float
    """Server: ``run.queued`` (seq 1), written with the run row by ``submit``."""
    posted_ms: float
    """Client: the ``201`` answer read."""
    first_ms: float
    """Client: the first ``data:`` frame of the stream read (the replayed ``run.queued``)."""
    started_ms: float
    """Server: ``run.started``, written once the worker claimed the run and read its state."""
    finished_ms: float
    """Server: ``run.succeeded``."""
    done_ms: float
    """Client: the ``run.succeeded`` frame read."""


@dataclass(frozen=True, slots=True)
class Streamed:
    runs: list[Timeline] = field(default_factory=list)


def _ms_since(origin: float, stamp: str) -> float:
    """Milliseconds from the epoch time ``origin`` to the ISO timestamp ``stamp``."""
    return (datetime.fromisoformat(stamp).timestamp() - origin) * 1000


async def _post(client: httpx.AsyncClient, workflow: str, *, wait: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"workflow": workflow, "input": {}}
    if wait:
        body |= {"wait": True, "wait_timeout": WAIT_TIMEOUT_SECONDS}
    response = await client.post("/v1/runs", json=body)
    if response.status_code != 201:
        raise RunFailed(f"POST /v1/runs answered {response.status_code}: {response.text[:300]}")
    document: dict[str, Any] = response.json()
    return document


@dataclass(frozen=True, slots=True)
class _Followed:
    first_at: float
    """``perf_counter()`` when the first ``data:`` frame was read."""
    done_at: float
    """``perf_counter()`` when the terminal event's frame was read."""
    stamps: dict[str, str]
    """Event type → ``ts`` of its first occurrence."""


async def _follow(client: httpx.AsyncClient, run_id: str) -> _Followed:
    """Read the run's stream until its terminal event, then hang up (as a UI does)."""
    first_at, stamps = 0.0, dict[str, str]()
    async with client.stream("GET", f"/v1/runs/{run_id}/stream") as response:
        if response.status_code != 200:
            raise RunFailed(f"GET /v1/runs/{run_id}/stream answered {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            now = time.perf_counter()
            event: dict[str, Any] = json.loads(line[5:])
            first_at = first_at or now
            stamps.setdefault(event["type"], event["ts"])
            if event["type"] in TERMINAL_EVENTS:
                if event["type"] != "run.succeeded":
                    raise RunFailed(f"run {run_id} ended {event['type']}: {event.get('data')}")
                return _Followed(first_at, now, stamps)
    raise RunFailed(f"the stream of run {run_id} ended before the run did")


async def callers(
    concurrency: int,
    runs: int,
    one: Callable[[], Coroutine[Any, Any, float]],
    max_seconds: float | None = None,
) -> Block:
    """``concurrency`` callers share ``runs`` calls of ``one`` (each returns its latency in ms).

    With ``max_seconds``, callers start no new call once that much time has passed, so a slow
    configuration costs a bounded time; the block then holds fewer runs.
    """
    latencies: list[float] = []
    remaining = runs
    cpu, started = time.process_time(), time.perf_counter()
    deadline = started + max_seconds if max_seconds is not None else float("inf")

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            latencies.append(await one())

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Block(len(latencies), wall, latencies, (time.process_time() - cpu) * 1000)


async def wait_block(
    client: httpx.AsyncClient, workflow: str, runs: int, concurrency: int, max_seconds: float | None = None
) -> Block:
    async def one() -> float:
        started = time.perf_counter()
        run = await _post(client, workflow, wait=True)
        if run["status"] != "succeeded":
            raise RunFailed(f"run {run['id']} answered {run['status']} after waiting: {run.get('error')}")
        return (time.perf_counter() - started) * 1000

    return await callers(concurrency, runs, one, max_seconds)


async def follow_block(
    client: httpx.AsyncClient, workflow: str, runs: int, concurrency: int, max_seconds: float | None = None
) -> Block:
    async def one() -> float:
        started = time.perf_counter()
        run = await _post(client, workflow, wait=False)
        followed = await _follow(client, run["id"])
        return (followed.done_at - started) * 1000

    return await callers(concurrency, runs, one, max_seconds)


async def stream_block(
    client: httpx.AsyncClient, workflow: str, runs: int, max_seconds: float | None = None
) -> Streamed:
    result = Streamed()
    deadline = time.perf_counter() + max_seconds if max_seconds is not None else float("inf")
    for _ in range(runs):
        if time.perf_counter() >= deadline:
            break
        epoch, started = time.time(), time.perf_counter()
        run = await _post(client, workflow, wait=False)
        posted = time.perf_counter()
        followed = await _follow(client, run["id"])
        stamps = followed.stamps
        result.runs.append(
            Timeline(
                queued_ms=_ms_since(epoch, stamps["run.queued"]),
                posted_ms=(posted - started) * 1000,
                first_ms=(followed.first_at - started) * 1000,
                started_ms=_ms_since(epoch, stamps["run.started"]),
                finished_ms=_ms_since(epoch, stamps["run.succeeded"]),
                done_ms=(followed.done_at - started) * 1000,
            )
        )
    return result


def http_client(base_url: str) -> httpx.AsyncClient:
    # Enough pooled keep-alive connections for every caller: no reconnects inside a block.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=HTTP_TIMEOUT_SECONDS)


class Client(Protocol):
    """Where the load comes from; both kinds answer the same calls with the same results."""

    kind: str

    async def wait(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block: ...

    async def follow(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block: ...

    async def stream(self, runs: int, max_seconds: float | None = None) -> Streamed: ...


class InProcessClient:
    """httpx in the benchmark's own event loop: the client's CPU is the server's CPU."""

    kind = "in-process"

    def __init__(self, http: httpx.AsyncClient, workflow: str) -> None:
        self.http = http
        self.workflow = workflow

    async def wait(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block:
        return await wait_block(self.http, self.workflow, runs, concurrency, max_seconds)

    async def follow(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block:
        return await follow_block(self.http, self.workflow, runs, concurrency, max_seconds)

    async def stream(self, runs: int, max_seconds: float | None = None) -> Streamed:
        return await stream_block(self.http, self.workflow, runs, max_seconds)


class SubprocessClient:
    """The same client in a child process (``python -m benchmarks._load``), talking JSON lines."""

    kind = "subprocess"

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, base_url: str, workflow: str) -> SubprocessClient:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._load",
            base_url,
            workflow,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        client = cls(process)
        await client._call({"op": "ping"})
        return client

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(request).encode() + b"\n")
        await stdin.drain()
        line = await stdout.readline()
        if not line:
            raise RuntimeError(f"the client process exited ({await self.process.wait()}) answering {request}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RunFailed(f"client process: {answer['error']}")
        return answer

    async def wait(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block:
        request = {"op": "wait", "runs": runs, "concurrency": concurrency, "max_seconds": max_seconds}
        return Block(**await self._call(request))

    async def follow(self, runs: int, concurrency: int, max_seconds: float | None = None) -> Block:
        request = {"op": "follow", "runs": runs, "concurrency": concurrency, "max_seconds": max_seconds}
        return Block(**await self._call(request))

    async def stream(self, runs: int, max_seconds: float | None = None) -> Streamed:
        answer = await self._call({"op": "stream", "runs": runs, "max_seconds": max_seconds})
        return Streamed([Timeline(**run) for run in answer["runs"]])

    async def close(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()  # the child's loop ends at end of input
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _serve_requests(base_url: str, workflow: str) -> None:
    """The child process: answer one JSON request per stdin line until stdin closes."""
    loop = asyncio.get_running_loop()
    async with http_client(base_url) as http:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            request = json.loads(line)
            op, runs, limit = request["op"], request.get("runs", 0), request.get("max_seconds")
            try:
                answer: Any
                if op == "ping":
                    answer = {}
                elif op == "wait":
                    answer = asdict(await wait_block(http, workflow, runs, request["concurrency"], limit))
                elif op == "follow":
                    answer = asdict(await follow_block(http, workflow, runs, request["concurrency"], limit))
                else:
                    answer = asdict(await stream_block(http, workflow, runs, limit))
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_serve_requests(sys.argv[1], sys.argv[2]))
