"""``python -m benchmarks.breakdown``: where a Trellis run's time goes, per node and per component.

Not part of ``make bench`` (it takes a minute and patches the runtime for its what-ifs). Views of
the 20-node no-op workflow of the ``linear-20`` benchmark, plus the fan-out and the compiler:

1. **Ladder** — the same 20 no-op steps with one layer added at a time, all on checkpoint files
   with Trellis's pragmas, wall and CPU (main thread vs the SQLite threads) per run:
   raw LangGraph → Trellis's compiled graph (``ainvoke``) → the same via ``astream`` with the
   runtime's stream modes → the full runtime with node events and node states *not* written →
   the full runtime → a what-if: the recorder batching for a few milliseconds (patched in
   this process only). Each step's difference is what that layer costs.
2. **Hotspots** — cProfile of the full runtime, main-thread self time by component, µs per node;
   and of the store's SQLite writer thread, µs per transaction.
3. **Prelude** — each store and checkpoint call made before the first node runs.
4. **Writes** — store transactions, events per transaction and checkpoints per run.
5. **Fan-out timeline** — the run's own event timestamps: how long before the slowest branch
   starts, and how long after it ends until ``execute`` returns.
6. **Compile** — cProfile of load + validate + compile of the 50-node definition, by component.

Numbers under cProfile are inflated by the profiler; read them as shares, the ladder as costs.
Writes ``artifacts/profile.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._graphs import LinearState, fanout_definition, linear_definition, linear_graph, thread
from benchmarks._harness import Machine, rounded, settle
from benchmarks._profiling import compile_hotspots, hotspots, writer_thread
from benchmarks.runtime import LINEAR_NODES, Run, bench_engine, trellis_run, tuned_saver
from trellis.nodes._context import SERVICES_KEY, StandaloneServices
from trellis.runtime import Engine
from trellis.runtime._execute import STREAM_MODES
from trellis.runtime._recorder import Recorder
from trellis.store import EventRecord, NewEvent, NodeStateUpdate

ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "profile.json"
LINGER_SECONDS = 0.01
"""Batching delay of the what-if rung (see :func:`lingering_writer`)."""


# -- 1. ladder ---------------------------------------------------------------------------------


@dataclass
class Rung:
    name: str
    run: Run
    wall_ms: list[float] = field(default_factory=list)
    main_cpu_ms: list[float] = field(default_factory=list)
    other_cpu_ms: list[float] = field(default_factory=list)

    async def block(self, runs: int, offset: int) -> None:
        settle()
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        for i in range(runs):
            await self.run(offset + i)
        main_cpu = (time.thread_time() - main) * 1000 / runs
        self.wall_ms.append((time.perf_counter() - wall) * 1000 / runs)
        self.main_cpu_ms.append(main_cpu)
        self.other_cpu_ms.append((time.process_time() - cpu) * 1000 / runs - main_cpu)

    def row(self) -> dict[str, float]:
        return {
            "wall_ms": rounded(statistics.median(self.wall_ms)),
            "main_thread_cpu_ms": rounded(statistics.median(self.main_cpu_ms)),
            "other_threads_cpu_ms": rounded(statistics.median(self.other_cpu_ms)),
        }


def lingering_writer(seconds: float) -> Callable[[], None]:
    """What-if: the recorder's writer waits up to ``seconds`` after waking, so one transaction
    takes several steps' events instead of one step's; closing the recorder cuts the wait short.
    Patches :class:`Recorder` in this process until restored."""
    real_writer, real_close = Recorder._writer, Recorder.close
    closing: dict[int, asyncio.Event] = {}

    async def writer(self: Recorder) -> None:
        closed = closing.setdefault(id(self), asyncio.Event())
        while not self._closing:
            await self._wake.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                self._error = exc
                return

    async def close(self: Recorder) -> None:
        closing.pop(id(self), asyncio.Event()).set()
        await real_close(self)

    Recorder._writer = writer  # type: ignore[method-assign]
    Recorder.close = close  # type: ignore[method-assign]

    def restore() -> None:
        Recorder._writer = real_writer  # type: ignore[method-assign]
        Recorder.close = real_close  # type: ignore[method-assign]

    return restore


def quiet_nodes(engine: Engine) -> Callable[[], None]:
    """Make ``engine.store.record`` drop node events and node states (run fields still written)."""
    real = engine.store.record

    async def record(
        run_id: str,
        *,
        events: Sequence[NewEvent] = (),
        node_states: Sequence[NodeStateUpdate] = (),
        **kwargs: Any,
    ) -> list[EventRecord]:
        kept = [e for e in events if e.node is None]
        if not kept and not kwargs.get("run"):
            return []
        return await real(run_id, events=kept, **kwargs)

    engine.store.record = record  # type: ignore[method-assign]

    def restore() -> None:
        engine.store.record = real  # type: ignore[method-assign]

    return restore


async def ladder(engine: Engine, directory: Path, ref: str, reps: int, runs: int) -> dict[str, Any]:
    probe = await engine.submit(ref, {})
    graph = (await engine.compiled(probe)).graph
    full = trellis_run(engine, ref)

    async with tuned_saver(directory / "ladder-raw.db") as saver:
        raw_graph = linear_graph(LINEAR_NODES, saver)

        async def raw(i: int) -> None:
            await raw_graph.ainvoke(LinearState(started=True), thread(f"raw-{i}"), durability="sync")

        async def invoke(i: int) -> None:
            config = thread(f"inv-{i}", **{SERVICES_KEY: StandaloneServices()})
            await graph.ainvoke({}, config, durability="sync")

        async def stream(i: int) -> None:
            config = thread(f"str-{i}", **{SERVICES_KEY: StandaloneServices()})
            async for _ in graph.astream(
                {}, config, stream_mode=STREAM_MODES, subgraphs=True, durability="sync"
            ):
                pass

        async def without_node_writes(i: int) -> None:
            restore = quiet_nodes(engine)
            try:
                await full(i)
            finally:
                restore()

        async def lingering(i: int) -> None:
            restore = lingering_writer(LINGER_SECONDS)
            try:
                await full(i)
            finally:
                restore()

        rungs = [
            Rung("raw LangGraph (WAL saver)", raw),
            Rung("+ Trellis graph: wrapper nodes, Command routing, private channels", invoke),
            Rung("+ astream(tasks, updates, custom, values; subgraphs)", stream),
            Rung("+ runtime (submit, claim, tracker, run rows), node writes dropped", without_node_writes),
            Rung("+ node events and node states written: full Trellis", full),
            Rung(
                f"what-if: full Trellis, recorder lingers {LINGER_SECONDS * 1000:g} ms per batch", lingering
            ),
        ]
        for rung in rungs:
            for i in range(3):
                await rung.run(-1 - i)
        for rep in range(reps):
            shift = rep % len(rungs)
            for rung in rungs[shift:] + rungs[:shift]:
                await rung.block(runs, rep * runs)
    return {rung.name: rung.row() for rung in rungs}


# -- 2. before the graph starts -----------------------------------------------------------------


async def prelude(engine: Engine, ref: str, runs: int) -> dict[str, float]:
    """Median ms of each store/checkpoint call ``submit`` + ``execute`` makes before the first node."""
    samples: dict[str, list[float]] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        samples.setdefault(name, []).append((now - since) * 1000)
        return now

    for _ in range(runs):
        t = time.perf_counter()
        run = await engine.submit(ref, {})
        t = lap("submit (resolve + create_run)", t)
        await engine.executor.claim(run.id)
        t = lap("claim (get_run + update_run)", t)
        compiled = await engine.compiled(run)
        t = lap("compiled (get_workflow + Workflow.model_validate + cache hit)", t)
        await engine.store.list_node_states(run.id)
        t = lap("list_node_states", t)
        await compiled.graph.aget_state({"configurable": {"thread_id": run.id}})
        t = lap("aget_state (empty thread)", t)
        await engine.get_run(run.id)
        lap("get_run (after the run)", t)
    return {name: rounded(statistics.median(values)) for name, values in samples.items()}


# -- 3. writes ---------------------------------------------------------------------------------


async def writes(engine: Engine, directory: Path, ref: str) -> dict[str, Any]:
    """Store calls (by method) and checkpoints of one run, and the events each ``record`` wrote."""
    store = engine.store
    calls: Counter[str] = Counter()
    events_per_record: list[int] = []

    def counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            if name == "record":
                events_per_record.append(len(kwargs.get("events", ())))
            return await method(*args, **kwargs)

        return call

    names = [
        name
        for name in dir(type(store))
        if not name.startswith("_") and inspect.iscoroutinefunction(getattr(type(store), name))
    ]
    for name in names:
        setattr(store, name, counted(name, getattr(store, name)))
    try:
        run = await engine.submit(ref, {})
        await engine.execute(run.id)
    finally:
        for name in names:
            delattr(store, name)  # back to the class's methods
    with sqlite3.connect(directory / "trellis.checkpoints.db") as db:
        count = "SELECT count(*) FROM {} WHERE thread_id = ?"
        (checkpoints,) = db.execute(count.format("checkpoints"), (run.id,)).fetchone()
        (pending,) = db.execute(count.format("writes"), (run.id,)).fetchone()
    return {
        "store_calls_per_run": dict(calls.most_common()),
        "events_per_record_call": events_per_record,
        "checkpoints_per_run": checkpoints,
        "checkpoint_writes_rows_per_run": pending,
    }


# -- 4. fan-out timeline -----------------------------------------------------------------------

SLOWEST = "gather_b1_0"
"""Node key of the fan-out's slowest branch (0.5 s)."""
FANOUT_PHASES = (
    ("submit", "run.started"),
    ("run.started", "node.started:gather"),
    ("node.started:gather", f"node.started:{SLOWEST}"),
    (f"node.started:{SLOWEST}", f"node.succeeded:{SLOWEST}"),
    (f"node.succeeded:{SLOWEST}", "node.succeeded:gather"),
    ("node.succeeded:gather", "node.succeeded:join"),
    ("node.succeeded:join", "run.succeeded"),
    ("run.succeeded", "execute.returned"),
    ("submit", "execute.returned"),
)


async def fanout_timeline(engine: Engine, reps: int) -> list[dict[str, float]]:
    record = await engine.register(fanout_definition())
    ref = f"{record.name}@{record.version}"
    await trellis_run(engine, ref)(0)
    timelines = []
    for _ in range(reps):
        settle()
        t0 = datetime.now(UTC)
        run = await engine.submit(ref, {})
        await engine.execute(run.id)
        at: dict[str, float] = {}
        for event in await engine.store.list_events(run.id):
            key = f"{event.type}:{event.node}" if event.node else event.type
            at.setdefault(key, (event.ts - t0).total_seconds() * 1000)
        at["execute.returned"] = (datetime.now(UTC) - t0).total_seconds() * 1000
        at["submit"] = 0.0
        timelines.append(
            {f"{start} → {end}": rounded(at[end] - at[start], 1) for start, end in FANOUT_PHASES}
        )
    return timelines


# -- main --------------------------------------------------------------------------------------


async def collect(reps: int, runs: int, profile_runs: int, dump: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trellis-profile-") as tmp:
        directory = Path(tmp)
        async with bench_engine(directory) as engine:
            record = await engine.register(linear_definition(LINEAR_NODES))
            ref = f"{record.name}@{record.version}"
            return {
                "ladder": await ladder(engine, directory, ref, reps, runs),
                "hotspots": await hotspots(trellis_run(engine, ref), profile_runs, dump),
                "writer_thread": await writer_thread(engine, trellis_run(engine, ref), 30),
                "prelude_ms": await prelude(engine, ref, 30),
                "writes": await writes(engine, directory, ref),
                "fanout_timeline_ms": await fanout_timeline(engine, 3),
            }


def print_report(report: dict[str, Any]) -> None:
    print(f"ladder, {LINEAR_NODES}-node no-op run (medians; ms per run):")
    previous: dict[str, float] | None = None
    for name, row in report["ladder"].items():
        step = "" if previous is None else f"  step {row['wall_ms'] - previous['wall_ms']:+7.2f}"
        print(
            f"  {row['wall_ms']:7.2f} wall {row['main_thread_cpu_ms']:7.2f} cpu(main) "
            f"{row['other_threads_cpu_ms']:6.2f} cpu(threads){step}  {name}"
        )
        previous = row
    hot = report["hotspots"]
    print(f"\nhotspots under cProfile ({hot['profiled_wall_ms_per_run']} ms/run profiled), µs per node:")
    for label, row in hot["components_us_per_node"].items():
        print(f"  {row['amount']:8.1f}  {row['share']:6.1%}  {label}")
    print("  trellis functions, cumulative µs per node:")
    for name, us in hot["trellis_functions_cumulative_us_per_node"].items():
        print(f"  {us:8.1f}  {name}")
    writer = report["writer_thread"]
    if "skipped" not in writer:
        print(
            f"\nstore writer thread under cProfile: {writer['writes_per_run']} transactions per run, "
            f"{writer['profiled_ms_per_write']} ms each (profiled); µs per transaction:"
        )
        for label, row in writer["components_us_per_write"].items():
            print(f"  {row['amount']:8.1f}  {row['share']:6.1%}  {label}")
    print("\nbefore the first node (median ms per call):")
    for name, ms in report["prelude_ms"].items():
        print(f"  {ms:7.2f}  {name}")
    written = report["writes"]
    print(f"\nstore calls in one run: {json.dumps(written['store_calls_per_run'])}")
    print(f"  events per record() call: {written['events_per_record_call']}")
    print(
        f"  checkpoints: {written['checkpoints_per_run']}, "
        f"checkpoint write rows: {written['checkpoint_writes_rows_per_run']}"
    )
    print("\ncompile of the 50-node definition under cProfile (ms per compile, share):")
    for label, row in report["compile_ms_per_compile"].items():
        print(f"  {row['amount']:8.2f}  {row['share']:6.1%}  {label}")
    print("\nfan-out timeline (ms, from submit):")
    for timeline in report["fanout_timeline_ms"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in timeline.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.breakdown", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30, help="runs per rung per repetition")
    parser.add_argument("--profile-runs", type=int, default=100)
    parser.add_argument("--pstats", type=Path, help="also dump the raw cProfile data here")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args(argv)
    machine = Machine.snapshot()
    print(f"machine: {machine.describe()}\n")
    report = asyncio.run(collect(args.reps, args.runs, args.profile_runs, args.pstats))
    report["compile_ms_per_compile"] = compile_hotspots(10)
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine.load_average, **report}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
