"""Circuit breakers: what the check costs on the call path, and what an open circuit saves.

**breaker-check-<backend>**: one ``agent``-style call to a loopback fake agent, guarded by a
closed breaker (``BreakerBoard.admit`` + ``succeeded``: one read of the shared breaker row, no
write) vs the same call unguarded. Both sides take turns in each repetition. The notes give the
check alone, and the failure path (a failure counted in the closed state: one write).

**open-circuit-fallback**: a run whose ``agent`` node calls a hanging agent (2 s time limit)
with a ``catch`` fallback. With the agent's circuit open, the run takes the fallback at once;
the baseline is the same run with the circuit closed, which waits out the agent's timeout.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._harness import Result, Skipped, Stats, percentile, rounded, settle
from benchmarks._serving import pg_schemas, pg_server_url
from trellis.config import Settings
from trellis.errors import ConnectionFailed
from trellis.registry import Registry
from trellis.resilience import BreakerBoard, BreakerPolicy
from trellis.runtime import Engine
from trellis.store import open_store
from trellis.testing import AgentServer, Behaviour

REPS = 7
CALLS_PER_REP = 200
FALLBACK_RUNS = 20
TIMEOUT_RUNS = 2
AGENT_TIMEOUT_SECONDS = 2.0

FLOW = """
name: guarded
state: {by: {type: string}}
start: call
nodes:
  call:
    type: agent
    agent: slow
    output: {by: '"agent"'}
    catch: [{errors: ["*"], next: fallback}]
  fallback: {type: set, values: {by: '"fallback:" + error.error'}}
"""


async def _timed(step: Callable[[], Awaitable[Any]], count: int) -> float:
    """Mean milliseconds per ``step`` over ``count`` calls."""
    started = time.perf_counter()
    for _ in range(count):
        await step()
    return (time.perf_counter() - started) * 1000 / count


async def breaker_check(label: str, url: str, reps: int, calls: int) -> Result:
    store = await open_store(url)
    board = BreakerBoard(store)
    policy = BreakerPolicy()
    try:
        with AgentServer(agents={"nlp": Behaviour(reply={"ok": True})}) as agents:
            target = agents.url("nlp", "/invoke")
            async with httpx.AsyncClient(trust_env=False) as client:

                async def bare() -> None:
                    (await client.post(target, json={"q": 1})).raise_for_status()

                async def guarded() -> None:
                    admission, _ = await board.admit("agent:nlp", policy)
                    await bare()
                    await board.succeeded(admission)

                async def check() -> None:
                    admission, _ = await board.admit("agent:nlp", policy)
                    await board.succeeded(admission)

                async def failure() -> None:
                    admission, _ = await board.admit("agent:bench-failures", many)
                    await board.failed(admission, ConnectionFailed("bench"))

                many = BreakerPolicy(failure_threshold=1_000_000)
                for step in (bare, guarded, check):
                    await _timed(step, 20)  # warm-up: connections, statement caches
                with_check: list[float] = []
                without: list[float] = []
                alone: list[float] = []
                failing: list[float] = []
                for rep in range(reps):
                    settle()
                    order = [(guarded, with_check), (bare, without)]
                    for step, into in order if rep % 2 == 0 else reversed(order):
                        into.append(await _timed(step, calls))
                    alone.append(await _timed(check, calls))
                    failing.append(await _timed(failure, max(calls // 4, 10)))
    finally:
        await store.close()
    return Result(
        name=f"breaker-check-{label}",
        trellis=Stats.of(with_check),
        baseline=Stats.of(without),
        baseline_label="the same loopback agent call, unguarded",
        unit="ms/call",
        notes={
            "check_alone_ms": rounded(percentile(alone, 0.5), 4),
            "failure_counted_ms": rounded(percentile(failing, 0.5), 4),
            "calls_per_rep": calls,
        },
    )


async def open_circuit(reps: int, baseline_runs: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp, AgentServer(agents={"slow": Behaviour(hang=True)}) as agents:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'trellis.db'}")
        async with Engine.open(settings, registry=Registry()) as engine:
            spec = {
                "base_url": agents.url("slow"),
                "timeout_seconds": AGENT_TIMEOUT_SECONDS,
                "breaker": {"failure_threshold": 1, "recovery_seconds": 3600},
            }
            await engine.register_agent("slow", spec)
            record = await engine.register(FLOW)

            async def run_once(expected: str) -> float:
                started = time.perf_counter()
                run = await engine.submit(f"{record.name}@{record.version}", {})
                done = await engine.execute(run.id)
                elapsed = (time.perf_counter() - started) * 1000
                assert done.output is not None
                if done.output["by"] != expected:
                    raise RuntimeError(f"expected {expected}, the run took {done.output['by']}")
                return elapsed

            waited = [await run_once("fallback:Timeout")]  # this one opens the circuit
            fallback = []
            for _ in range(reps):
                fallback.append(await run_once("fallback:CircuitOpen"))
            for _ in range(baseline_runs - 1):
                await engine.reset_breaker("agent:slow")
                waited.append(await run_once("fallback:Timeout"))
            agents["slow"].set(hang=False)
    return Result(
        name="open-circuit-fallback",
        trellis=Stats.of(fallback),
        baseline=Stats.of(waited),
        baseline_label=f"the same run waiting out the agent's {AGENT_TIMEOUT_SECONDS:g} s timeout",
        unit="ms/run",
        notes={"agent_timeout_ms": AGENT_TIMEOUT_SECONDS * 1000},
    )


def details(result: Result) -> list[str]:
    notes = result.notes
    if result.name.startswith("breaker-check"):
        return [
            f"  overhead {result.overhead_ms * 1000:+.0f} us/call; the check alone "
            f"{notes['check_alone_ms'] * 1000:.0f} us (one read), a counted failure "
            f"{notes['failure_counted_ms'] * 1000:.0f} us (one write)"
        ]
    return [
        f"  the open circuit answered in {result.trellis.median:.1f} ms per run "
        f"({result.trellis.median / notes['agent_timeout_ms']:.1%} of the agent's timeout)"
    ]


def run(quick: bool = False) -> list[Result | Skipped]:
    reps, calls = (2, 30) if quick else (REPS, CALLS_PER_REP)
    results: list[Result | Skipped] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'trellis.db'}"
        results.append(asyncio.run(breaker_check("sqlite", url, reps, calls)))
    server, where = pg_server_url()
    if server is None:
        results.append(Skipped("breaker-check-postgresql", where))
    else:
        with pg_schemas(server, 1) as (pg_url,):
            results.append(asyncio.run(breaker_check("postgresql", pg_url, reps, calls)))
    runs = 3 if quick else FALLBACK_RUNS
    results.append(asyncio.run(open_circuit(runs, 1 if quick else TIMEOUT_RUNS)))
    return results
