"""The service end to end: ``POST /v1/runs`` to ``succeeded`` over HTTP vs raw LangGraph in-process.

**Service side**, once per backend (a SQLite file; a fresh PostgreSQL schema): what ``trellis
serve --concurrency 16`` runs — ``create_app(engine)`` under a real ``uvicorn`` on
``127.0.0.1`` and an embedded worker with 16 slots, in this process's event loop
(:mod:`benchmarks._serving`). The workload is a 3-node chain of tool nodes calling a no-op async
tool. The load comes from ``httpx`` in a child process (:mod:`benchmarks._load`): the event loop
is the bottleneck, and an in-process client would put its own request building and parsing on
it. The SQLite rows also measure the client in this process, so that choice stays checked.

* **runs/s** at client concurrency 1 and 16: each caller posts ``{"wait": true}`` runs back to
  back; a run counts when its answer says ``succeeded``. One request per run, answered only once
  the run settled: the client neither polls nor adds requests, and the number is what a
  synchronous caller gets. Callers following ``/stream`` instead (POST, then the stream until
  the terminal event, as a UI does) are measured alongside at concurrency 16, and so is the same
  work without HTTP (``Engine.submit`` + the route's wait, in-process) to split the cost.
* **latency** at concurrency 1: POST, open ``GET /v1/runs/{id}/stream`` as soon as the ``201``
  is read, time the first ``data:`` frame and the terminal one (p50, p99).

**Floor**: the same chain built by hand on raw LangGraph, ``ainvoke(..., durability="sync")``, a
fresh thread per run, same concurrency, on ``AsyncSqliteSaver`` (its defaults, as in the
research's §2a; with Trellis's WAL pragmas for information) or ``AsyncPostgresSaver`` (a pool of
4..16). The floor of the first-event latency is the first chunk of ``astream(stream_mode="tasks")``.

Every configuration takes turns within each repetition, in rotating order, so a neighbour's load
spike lands on all of them. Throughput is the median over repetitions of runs / block wall time;
latency percentiles pool every run. A block stops starting runs after ``block_seconds``, so a
slow configuration costs bounded time (the report gives the run counts). Finally the SQLite
concurrency-16 case runs again to show where a run's time goes (:mod:`benchmarks._service_profile`).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from benchmarks._graphs import linear_graph
from benchmarks._harness import NO_TARGET, Result, Skipped, Stats, Target, percentile, rounded, settle
from benchmarks._load import Block, InProcessClient, Streamed, SubprocessClient, Timeline, http_client
from benchmarks._service_profile import counting_store_calls, profile_floor, profile_lines, profile_service
from benchmarks._serving import (
    NODES,
    WORKFLOW,
    Floor,
    counted_warnings,
    pg_schemas,
    pg_server_url,
    postgres_saver,
    serving,
)
from benchmarks.runtime import tuned_saver
from trellis import _loop

CONCURRENCY = 16
C1, C16 = "c1", f"c{CONCURRENCY}"
SLOW_MS = 900.0
"""Runs slower than this are counted apart: at concurrency 1 they mean a missed wake-up that
only a 1 s fallback poll (``stream_poll_seconds``, the worker's ``poll_seconds``) recovered."""

THROUGHPUT_TARGET = Target(">= 250 runs/s", min_value=250.0)
RESEARCH_FLOOR_C16 = 338.0
"""runs/s of the SQLite floor at concurrency 16 when the target was set (research §2a, a quiet
machine). Only used to restate the target as a share of the floor, which survives a slower or
busier machine better than an absolute rate."""
FIRST_EVENT_TARGET = Target("p50 <= 10 ms", max_value=10.0)


@dataclass(frozen=True, slots=True)
class Sizes:
    reps: int = 3
    runs: int = 100
    """Runs per throughput block (so up to 300 per configuration)."""
    stream_runs: int = 60
    """Runs per latency block."""
    block_seconds: float = 5.0
    """A block starts no new run after this long."""
    warmup: int = 20
    profile_runs: int = 200


QUICK = Sizes(reps=1, runs=32, stream_runs=10, block_seconds=3.0, warmup=5, profile_runs=32)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Series:
    """One configuration's blocks across repetitions, and what this process spent on them."""

    blocks: list[Block] = field(default_factory=list)
    timelines: list[Timeline] = field(default_factory=list)
    firsts_ms: list[float] = field(default_factory=list)
    process_cpu_ms_per_run: list[float] = field(default_factory=list)
    """This process (the server, plus the client when it is in-process), all threads."""
    loop_cpu_ms_per_run: list[float] = field(default_factory=list)
    """This process's main thread: the event loop serving HTTP and executing runs."""

    def throughput(self) -> Stats:
        return Stats.of([b.runs_per_second for b in self.blocks])

    def latency(self) -> list[float]:
        return [ms for b in self.blocks for ms in b.latency_ms] or self.firsts_ms

    def runs(self) -> int:
        return len(self.latency()) or len(self.timelines)

    async def measure(self, step: Callable[[], Awaitable[Block | Streamed | list[float]]]) -> None:
        settle()
        cpu, loop = time.process_time(), time.thread_time()
        outcome = await step()
        cpu, loop = time.process_time() - cpu, time.thread_time() - loop
        if isinstance(outcome, Block):
            self.blocks.append(outcome)
            runs = outcome.runs
        elif isinstance(outcome, Streamed):
            self.timelines += outcome.runs
            runs = len(outcome.runs)
        else:
            self.firsts_ms += outcome
            runs = len(outcome)
        self.process_cpu_ms_per_run.append(cpu * 1000 / max(runs, 1))
        self.loop_cpu_ms_per_run.append(loop * 1000 / max(runs, 1))

    def summary(self, *, count_slow: bool) -> dict[str, Any]:
        """Throughput, latency and CPU; ``count_slow`` (concurrency 1) adds the runs over ``SLOW_MS``."""
        latency = self.latency()
        side: dict[str, Any] = {
            "runs": self.runs(),
            "p50_ms": rounded(percentile(latency, 0.5)),
            "p99_ms": rounded(percentile(latency, 0.99)),
            "slow_runs": sum(ms > SLOW_MS for ms in latency) if count_slow else 0,
            "process_cpu_ms_per_run": rounded(median(self.process_cpu_ms_per_run)),
            "loop_cpu_ms_per_run": rounded(median(self.loop_cpu_ms_per_run)),
        }
        if self.blocks:
            side["runs_per_second"] = rounded(self.throughput().median)
            side["client_cpu_ms_per_run"] = rounded(median(b.cpu_ms / b.runs for b in self.blocks))
        return side


Steps = dict[str, Callable[[], Awaitable[Block | Streamed | list[float]]]]


async def take_turns(steps: Steps, reps: int) -> dict[str, Series]:
    measured = {name: Series() for name in steps}
    names = list(steps)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            await measured[name].measure(steps[name])
    return measured


@dataclass
class Measured:
    """One backend's series, and what else was seen while measuring it."""

    series: dict[str, Series]
    profile: dict[str, Any] = field(default_factory=dict)
    """SQLite: where a run's time goes (:func:`profile_service`)."""
    store_calls_per_run: dict[str, float] = field(default_factory=dict)
    """PostgreSQL: store calls per run at concurrency 16, counted in one more block."""
    psycopg_warnings: Counter[str] = field(default_factory=Counter)


def _floor_steps(name: str, floor: Floor, sizes: Sizes) -> Steps:
    return {
        f"{name} {C1}": lambda: floor.block(sizes.runs, 1, sizes.block_seconds),
        f"{name} {C16}": lambda: floor.block(sizes.runs, CONCURRENCY, sizes.block_seconds),
    }


async def backend(
    label: str, database_url: str, savers: dict[str, BaseCheckpointSaver[Any]], sizes: Sizes, *, extra: bool
) -> Measured:
    """The service on ``database_url`` vs raw LangGraph on each of ``savers`` (``floor`` first).

    With ``extra`` (SQLite): also concurrency 16 with the client in this process, with callers
    following ``/stream``, and without HTTP; then the profile.
    """
    floors = {name: Floor(linear_graph(NODES, saver), f"{label}-{name}") for name, saver in savers.items()}
    seconds = sizes.block_seconds
    with counted_warnings("psycopg") as warnings:
        async with serving(database_url) as service, AsyncExitStack() as stack:
            client = await SubprocessClient.start(service.base_url, WORKFLOW)
            stack.push_async_callback(client.close)
            steps: Steps = {
                f"service {C1}": lambda: client.wait(sizes.runs, 1, seconds),
                f"service {C16}": lambda: client.wait(sizes.runs, CONCURRENCY, seconds),
                "service stream": lambda: client.stream(sizes.stream_runs, seconds),
            }
            for name, floor in floors.items():
                steps |= _floor_steps(name, floor, sizes)
            steps["floor first"] = lambda: floors["floor"].first_chunks(sizes.stream_runs, seconds)
            if extra:
                local = InProcessClient(
                    await stack.enter_async_context(http_client(service.base_url)), WORKFLOW
                )
                steps[f"service {C16} in-process client"] = lambda: local.wait(
                    sizes.runs, CONCURRENCY, seconds
                )
                steps[f"service {C16} follow"] = lambda: client.follow(sizes.runs, CONCURRENCY, seconds)
                steps[f"engine {C16}"] = lambda: service.run_without_http(sizes.runs, CONCURRENCY, seconds)
                await local.wait(sizes.warmup, CONCURRENCY)
            await client.wait(sizes.warmup, CONCURRENCY)
            await client.stream(max(2, sizes.warmup // 4))
            for floor in floors.values():
                await floor.block(sizes.warmup, CONCURRENCY)
            measured = Measured(await take_turns(steps, sizes.reps))
            if extra:
                runs, floor, limit = sizes.profile_runs, floors["floor"], 2 * seconds
                measured.profile = await profile_service(service.engine, client, runs, CONCURRENCY, limit)
                measured.profile["floor"] = await profile_floor(lambda: floor.block(runs, CONCURRENCY, limit))
            else:
                with counting_store_calls(service.engine) as calls:
                    block = await client.wait(sizes.runs, CONCURRENCY, seconds)
                measured.store_calls_per_run = {k: rounded(v / block.runs, 2) for k, v in calls.most_common()}
    measured.psycopg_warnings = warnings
    return measured


# -- results ------------------------------------------------------------------------------------

TIMELINE: tuple[tuple[str, str, str], ...] = (
    # An event's stamp is taken when the store call that writes it starts (before its commit).
    ("POST sent → run.queued stamped (HTTP in, access, resolve)", "", "queued_ms"),
    ("run.queued → 201 read (insert committed, answer sent)", "queued_ms", "posted_ms"),
    ("201 read → first frame read (GET /stream, replay of run.queued)", "posted_ms", "first_ms"),
    ("run.queued → run.started stamped (wake-up, claim, state read)", "queued_ms", "started_ms"),
    ("run.started → run.succeeded stamped (3 nodes, checkpoints, events)", "started_ms", "finished_ms"),
    ("run.succeeded → its frame read (commit, bus, SSE)", "finished_ms", "done_ms"),
)


def _timeline(runs: list[Timeline]) -> dict[str, float]:
    return {
        label: rounded(median(getattr(t, end) - (getattr(t, start) if start else 0.0) for t in runs))
        for label, start, end in TIMELINE
    }


def backend_results(label: str, measured: Measured, sizes: Sizes) -> list[Result]:
    series = measured.series
    sqlite = label == "sqlite"
    saver = "AsyncSqliteSaver" if sqlite else "AsyncPostgresSaver"
    common: dict[str, Any] = {"reps": sizes.reps, "runs_per_block": sizes.runs}
    results = []
    for conc in (C1, C16):
        notes: dict[str, Any] = {
            "kind": "throughput",
            **common,
            "service": series[f"service {conc}"].summary(count_slow=conc == C1),
            "floor": series[f"floor {conc}"].summary(count_slow=conc == C1),
        }
        extras = {"floor_wal": f"floor-wal {conc}"}
        if conc == C16:
            extras |= {
                "in_process_client": f"service {C16} in-process client",
                "follow": f"service {C16} follow",
                "without_http": f"engine {C16}",
            }
            if measured.profile:
                notes["profile"] = measured.profile
            if measured.store_calls_per_run:
                notes["store_calls_per_run"] = measured.store_calls_per_run
            if sqlite:
                share = (THROUGHPUT_TARGET.min_value or 0.0) / RESEARCH_FLOOR_C16
                notes["target_share_of_floor"] = rounded(share)
        notes |= {
            key: series[name].summary(count_slow=conc == C1) for key, name in extras.items() if name in series
        }
        results.append(
            Result(
                name=f"service-{label} {conc} runs/s",
                trellis=series[f"service {conc}"].throughput(),
                baseline=series[f"floor {conc}"].throughput(),
                baseline_label=f"raw LangGraph + {saver}, durability=sync, same concurrency",
                unit="runs/s",
                target=THROUGHPUT_TARGET if sqlite and conc == C16 else NO_TARGET,
                notes=notes,
            )
        )
    timelines = series["service stream"].timelines
    firsts, dones = [t.first_ms for t in timelines], [t.done_ms for t in timelines]
    floor_first, floor_c1 = series["floor first"].firsts_ms, series[f"floor {C1}"].latency()
    latency = {"kind": "latency", **common, "runs": len(timelines)}
    results.append(
        Result(
            name=f"service-{label} POST → first SSE event",
            trellis=Stats.of(firsts),
            baseline=Stats.of(floor_first),
            baseline_label=f"raw LangGraph astream, first chunk, {saver}",
            unit="ms",
            target=FIRST_EVENT_TARGET,
            notes={
                **latency,
                "p99_ms": rounded(percentile(firsts, 0.99)),
                "floor_p99_ms": rounded(percentile(floor_first, 0.99)),
                "slow_runs": sum(ms > SLOW_MS for ms in firsts),
                "timeline_median_ms": _timeline(timelines),
                # counted over the whole backend; streams closed after their terminal event cause them
                "psycopg_warnings": dict(measured.psycopg_warnings),
            },
        )
    )
    results.append(
        Result(
            name=f"service-{label} POST → succeeded",
            trellis=Stats.of(dones),
            baseline=Stats.of(floor_c1),
            baseline_label=f"raw LangGraph ainvoke, {saver}, concurrency 1",
            unit="ms",
            notes={
                **latency,
                "p99_ms": rounded(percentile(dones, 0.99)),
                "floor_p99_ms": rounded(percentile(floor_c1, 0.99)),
                "slow_runs": sum(ms > SLOW_MS for ms in dones),
            },
        )
    )
    return results


SIDES = (
    ("service", "service"),
    ("service, client in-process", "in_process_client"),
    ("service, callers follow /stream", "follow"),
    ("same work without HTTP (submit + wait in-process)", "without_http"),
    ("floor", "floor"),
    ("floor on a WAL saver", "floor_wal"),
)


def _slow(count: int, runs: int) -> str:
    return f"; {count} of {runs} runs over {SLOW_MS / 1000:g} s" if count else ""


def _side_line(side: dict[str, Any], *, with_client: bool) -> str:
    client = f", client process {side['client_cpu_ms_per_run']:.2f}" if with_client else ""
    return (
        f"{side['runs_per_second']:.1f} runs/s, p50 {side['p50_ms']:.2f} / p99 {side['p99_ms']:.2f} ms "
        f"per run over {side['runs']}{_slow(side['slow_runs'], side['runs'])}; CPU "
        f"{side['process_cpu_ms_per_run']:.2f} ms/run (event loop {side['loop_cpu_ms_per_run']:.2f}{client})"
    )


def details(result: Result) -> list[str]:
    notes = result.notes
    lines = []
    if notes["kind"] == "latency":
        lines.append(
            f"  p50 {result.trellis.median:.2f} / p99 {notes['p99_ms']:.2f} ms over {notes['runs']} runs"
            f"{_slow(notes['slow_runs'], notes['runs'])}; floor p50 {result.baseline.median:.2f} / "
            f"p99 {notes['floor_p99_ms']:.2f} ms"
        )
        if "timeline_median_ms" in notes:
            lines.append("  median timeline of a run (client readings and server event stamps):")
            lines += [f"    {ms:7.2f} ms  {phase}" for phase, ms in notes["timeline_median_ms"].items()]
    else:
        for label, key in SIDES:
            side = notes.get(key)
            if side is not None:
                lines.append(f"  {label}: {_side_line(side, with_client=key in ('service', 'follow'))}")
        if "target_share_of_floor" in notes:
            share, floor = notes["target_share_of_floor"], result.baseline.median
            lines.append(
                f"  target relative to the floor: {THROUGHPUT_TARGET.text} was set against a floor of "
                f"{RESEARCH_FLOOR_C16:g} runs/s (research §2a), i.e. {share:.2f}x of it; here the floor does "
                f"{floor:.1f} runs/s, so {share:.2f}x would be {share * floor:.1f} runs/s; the service does "
                f"{result.ratio:.2f}x"
            )
        if "in_process_client" in notes:
            inproc, sub = notes["in_process_client"], notes["service"]
            added = inproc["loop_cpu_ms_per_run"] - sub["loop_cpu_ms_per_run"]
            lines.append(
                f"  client placement: in-process {inproc['runs_per_second']:.1f} vs subprocess "
                f"{sub['runs_per_second']:.1f} runs/s; an in-process client adds {added:+.2f} ms of "
                "event-loop CPU per run (the headline uses the subprocess client)"
            )
        if "store_calls_per_run" in notes:
            lines.append(
                "  store calls per run (one more block, counted): "
                + ", ".join(f"{name} {count:g}" for name, count in notes["store_calls_per_run"].items())
            )
        if "profile" in notes:
            lines += profile_lines(notes["profile"])
    for message, count in notes.get("psycopg_warnings", {}).items():
        lines.append(f"  psycopg warned {count}x: {message!r}")
    return lines


# -- entry point --------------------------------------------------------------------------------


async def measure(sizes: Sizes) -> list[Result | Skipped]:
    outcomes: list[Result | Skipped] = []
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        directory = Path(tmp)
        async with (
            AsyncSqliteSaver.from_conn_string(str(directory / "floor.db")) as default,
            tuned_saver(directory / "floor-wal.db") as wal,
        ):
            url = f"sqlite+aiosqlite:///{directory / 'trellis.db'}"
            sqlite = await backend("sqlite", url, {"floor": default, "floor-wal": wal}, sizes, extra=True)
    outcomes += backend_results("sqlite", sqlite, sizes)
    server, where = pg_server_url()
    if server is None:
        outcomes.append(Skipped("service-postgresql", where))
        return outcomes
    with pg_schemas(server, 2) as (service_url, floor_url):
        async with postgres_saver(floor_url) as saver:
            postgres = await backend("postgresql", service_url, {"floor": saver}, sizes, extra=False)
    outcomes += backend_results("postgresql", postgres, sizes)
    return outcomes


def run(quick: bool = False) -> list[Result | Skipped]:
    # The loop `trellis serve` runs on (uvloop unless TRELLIS_EVENT_LOOP=asyncio), for both sides.
    return _loop.run(measure(QUICK if quick else Sizes()))
