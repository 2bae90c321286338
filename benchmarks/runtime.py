"""Runs through the Trellis runtime vs the same graphs on raw LangGraph, all on SQLite files.

**linear-20**: a 20-node chain of no-op tool nodes. Trellis side: one :class:`Engine` on a fresh
SQLite file, ``submit`` + ``execute`` per run (a run row, node states and events persisted,
checkpoints with ``durability="sync"``). Baseline: the hand-built 20-node ``StateGraph`` on
``AsyncSqliteSaver.from_conn_string(<file>)``, ``ainvoke(..., durability="sync")`` with a fresh
``thread_id`` per run. A second, informational baseline runs the same graph on a saver with
the pragmas Trellis gives its own checkpoint file (WAL, ``synchronous=NORMAL``): the default
saver fsyncs every checkpoint, Trellis's does not, and that difference alone can dwarf
Trellis's own work on a slow disk.

**fanout**: one ``parallel`` node of four branches sleeping 0.3 / 0.5 / 0.1 / 0.05 s, then a
join; wall time from ``submit`` to the end of ``execute`` vs the 500 ms floor (the longest
branch). Raw LangGraph's overhead on the same shape is measured alongside for context.

All three sides take turns within each repetition, in rotating order, so a neighbour's load
spike lands on all of them rather than on one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from benchmarks._graphs import (
    FANOUT_SLEEPS,
    FanoutState,
    LinearState,
    fanout_definition,
    fanout_graph,
    linear_definition,
    linear_graph,
    thread,
    tools,
)
from benchmarks._harness import Result, Stats, Target, percentile, rounded, settle
from trellis import _loop
from trellis.config import Settings
from trellis.runtime import Engine

LINEAR_NODES = 20
REPS = 7
RUNS_PER_REP = 40
WARMUP_RUNS = 5
FANOUT_REPS = 7

LINEAR_TARGET = Target("<= 1.50x", max_ratio=1.5)
FANOUT_TARGET = Target("overhead <= 10 ms", max_overhead_ms=10.0)

TRELLIS_CHECKPOINT_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
"""What Trellis sets on its checkpoint file (``trellis.store.checkpointer``), for the tuned baseline."""

Run = Callable[[int], Awaitable[None]]
"""One run of a workload; the argument numbers the run (for fresh thread ids)."""


@dataclass
class Side:
    """One contestant: how to run once, and what it measured."""

    name: str
    run: Run
    rep_means_ms: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)
    cpu_ms_per_run: list[float] = field(default_factory=list)

    async def block(self, runs: int, offset: int) -> None:
        """``runs`` timed runs; records each run's wall time, the block's mean and CPU per run."""
        settle()
        cpu = time.process_time()
        started = time.perf_counter()
        for i in range(runs):
            t0 = time.perf_counter()
            await self.run(offset + i)
            self.run_ms.append((time.perf_counter() - t0) * 1000)
        self.rep_means_ms.append((time.perf_counter() - started) * 1000 / runs)
        self.cpu_ms_per_run.append((time.process_time() - cpu) * 1000 / runs)

    def stats(self) -> Stats:
        return Stats.of(self.rep_means_ms)

    def summary(self) -> dict[str, Any]:
        return {
            "median_of_rep_means_ms": rounded(self.stats().median),
            "run_p50_ms": rounded(percentile(self.run_ms, 0.5)),
            "run_p99_ms": rounded(percentile(self.run_ms, 0.99)),
            "cpu_ms_per_run": rounded(Stats.of(self.cpu_ms_per_run).median),
        }


async def _take_turns(sides: list[Side], reps: int, runs: int, warmup: int) -> None:
    for side in sides:
        for i in range(warmup):
            await side.run(-1 - i)
    for rep in range(reps):
        shift = rep % len(sides)
        for side in sides[shift:] + sides[:shift]:
            await side.block(runs, rep * runs)


@asynccontextmanager
async def tuned_saver(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    """An ``AsyncSqliteSaver`` with the pragmas Trellis uses for its checkpoint file."""
    async with aiosqlite.connect(str(path)) as conn:
        for pragma in TRELLIS_CHECKPOINT_PRAGMAS:
            await conn.execute(pragma)
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver


@asynccontextmanager
async def bench_engine(directory: Path) -> AsyncIterator[Engine]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{directory / 'trellis.db'}")
    async with Engine.open(settings, registry=tools()) as engine:
        yield engine


def trellis_run(engine: Engine, ref: str) -> Run:
    async def run(_: int) -> None:
        record = await engine.submit(ref, {})
        finished = await engine.execute(record.id)
        if finished.status.value != "succeeded":
            raise RuntimeError(f"benchmark run {record.id} ended {finished.status.value}: {finished.error}")

    return run


async def linear(reps: int = REPS, runs: int = RUNS_PER_REP, nodes: int = LINEAR_NODES) -> Result:
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        directory = Path(tmp)
        async with AsyncExitStack() as stack:
            engine = await stack.enter_async_context(bench_engine(directory))
            default_saver = await stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(str(directory / "langgraph.db"))
            )
            wal_saver = await stack.enter_async_context(tuned_saver(directory / "langgraph-wal.db"))
            record = await engine.register(linear_definition(nodes))
            ref = f"{record.name}@{record.version}"

            def raw(saver: AsyncSqliteSaver, prefix: str) -> Run:
                graph = linear_graph(nodes, saver)

                async def run(i: int) -> None:
                    await graph.ainvoke(LinearState(started=True), thread(f"{prefix}-{i}"), durability="sync")

                return run

            trellis = Side("trellis", trellis_run(engine, ref))
            baseline = Side("langgraph", raw(default_saver, "default"))
            tuned = Side("langgraph-wal", raw(wal_saver, "wal"))
            await _take_turns([trellis, baseline, tuned], reps, runs, WARMUP_RUNS)

            probe = await engine.submit(ref, {})
            await engine.execute(probe.id)
            events = len(await engine.store.list_events(probe.id))
            node_states = len(await engine.store.list_node_states(probe.id))

    notes: dict[str, Any] = {
        "nodes": nodes,
        "reps": reps,
        "runs_per_rep": runs,
        "events_per_run": events,
        "node_states_per_run": node_states,
        "trellis": trellis.summary(),
        "langgraph_default_saver": baseline.summary(),
        "langgraph_wal_saver": tuned.summary(),
        "trellis_ms_per_node": rounded(trellis.stats().median / nodes),
        "baseline_ms_per_node": rounded(baseline.stats().median / nodes),
        "ratio_vs_wal_saver": rounded(trellis.stats().median / tuned.stats().median),
        "overhead_vs_wal_saver_ms_per_node": rounded((trellis.stats().median - tuned.stats().median) / nodes),
    }
    return Result(
        name=f"linear-{nodes}",
        trellis=trellis.stats(),
        baseline=baseline.stats(),
        baseline_label="LangGraph + AsyncSqliteSaver, durability=sync",
        unit="ms/run",
        target=LINEAR_TARGET,
        notes=notes,
    )


def linear_details(result: Result) -> list[str]:
    notes = result.notes
    wal = notes["langgraph_wal_saver"]
    lines = [
        f"  per node: trellis {notes['trellis_ms_per_node']:.3f} ms vs langgraph "
        f"{notes['baseline_ms_per_node']:.3f} ms; {notes['events_per_run']} events and "
        f"{notes['node_states_per_run']} node states persisted per run",
    ]
    for label, key in (("trellis", "trellis"), ("langgraph", "langgraph_default_saver")):
        side = notes[key]
        lines.append(
            f"  {label}: p50 {side['run_p50_ms']:.2f} / p99 {side['run_p99_ms']:.2f} ms per run, "
            f"CPU {side['cpu_ms_per_run']:.2f} ms per run"
        )
    lines.append(
        f"  info: langgraph on a WAL + synchronous=NORMAL saver (Trellis's own pragmas) "
        f"{wal['median_of_rep_means_ms']:.2f} ms/run (CPU {wal['cpu_ms_per_run']:.2f}) → trellis "
        f"ratio {notes['ratio_vs_wal_saver']:.2f}x, "
        f"{notes['overhead_vs_wal_saver_ms_per_node']:+.3f} ms/node"
    )
    return lines


async def fanout(reps: int = FANOUT_REPS) -> Result:
    floor_ms = max(FANOUT_SLEEPS) * 1000
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        directory = Path(tmp)
        async with AsyncExitStack() as stack:
            engine = await stack.enter_async_context(bench_engine(directory))
            saver = await stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(str(directory / "langgraph.db"))
            )
            record = await engine.register(fanout_definition())
            graph = fanout_graph(saver)

            async def raw(i: int) -> None:
                await graph.ainvoke(FanoutState(), thread(f"fanout-{i}"), durability="sync")

            trellis = Side("trellis", trellis_run(engine, f"{record.name}@{record.version}"))
            baseline = Side("langgraph", raw)
            await _take_turns([trellis, baseline], reps, 1, warmup=1)

    raw_ms = baseline.stats().median
    notes: dict[str, Any] = {
        "branches_seconds": list(FANOUT_SLEEPS),
        "reps": reps,
        "trellis": trellis.summary(),
        "langgraph_sqlite_ms": rounded(raw_ms),
        "langgraph_overhead_ms": rounded(raw_ms - floor_ms),
    }
    return Result(
        name="fanout-4",
        trellis=trellis.stats(),
        baseline=Stats.of([floor_ms]),
        baseline_label="floor: the slowest branch",
        unit="ms",
        target=FANOUT_TARGET,
        notes=notes,
    )


def fanout_details(result: Result) -> list[str]:
    notes = result.notes
    return [
        f"  trellis wall {result.trellis.spread()}, CPU {notes['trellis']['cpu_ms_per_run']:.2f} ms per run; "
        f"raw LangGraph + AsyncSqliteSaver on the same shape: {notes['langgraph_sqlite_ms']:.2f} ms "
        f"({notes['langgraph_overhead_ms']:+.2f} ms over the floor)",
    ]


def run_linear(reps: int = REPS, runs: int = RUNS_PER_REP) -> Result:
    return _loop.run(linear(reps, runs))  # the loop `trellis run` uses, for both sides


def run_fanout(reps: int = FANOUT_REPS) -> Result:
    return _loop.run(fanout(reps))
