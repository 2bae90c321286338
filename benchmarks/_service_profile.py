"""Where a service run's time goes: CPU per thread, store calls, and the event loop under cProfile.

Three views of the same workload (``POST /v1/runs`` with ``wait`` at concurrency 16, the client
in its own process so that none of its work is in the numbers):

1. **Threads** (unprofiled): CPU per run of the event loop and of each group of threads (the
   store's SQLite writer and readers, aiosqlite's checkpoint thread), from ``/proc``; the store's
   transactions per run and the CPU each costs on its thread.
2. **Store calls** (unprofiled): :class:`~trellis.store.Store` calls per run, by method.
3. **Under cProfile**: the event loop's self time by component (package), cumulative time of
   the stages a run goes through, and exact counts per run (loop iterations, callbacks, tasks,
   thread hops), timed by the wall clock minus the loop's waits in ``poll()``; and the store's
   writer thread by component, timed by that thread's CPU clock (with the wall clock, its waits
   to get the GIL back after each ``sqlite3`` call would pass for SQLite's work). cProfile
   inflates call-heavy code more than the rest, so profiled times are scaled to the unprofiled
   CPU: read them as shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import inspect
import os
import pstats
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._harness import rounded, settle
from benchmarks._load import Block, Client
from benchmarks._profiling import IDLE as IDLE_SQLITE
from benchmarks._profiling import by_component, component_of, shares
from trellis.runtime import Engine

LOOP = "event loop (main thread)"
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/uvicorn/", "uvicorn (HTTP server, ASGI glue)"),
    ("/h11/", "h11 (HTTP/1.1 parsing and writing)"),
    ("httptools", "httptools (HTTP/1.1 parsing, compiled)"),
    ("/starlette/", "starlette (routing, middleware, responses)"),
    ("/fastapi/", "fastapi (dependencies, validation, serialisation)"),
    ("/anyio/", "anyio"),
    ("/trellis/api/", "trellis.api (routes, access, streams)"),
    ("/trellis/auth/", "trellis.auth"),
    ("/trellis/queue/", "trellis.queue (worker)"),
)
IDLE = "event loop waiting in poll()"

STAGES: tuple[tuple[str, str, str], ...] = (
    # (label, file suffix, function): cumulative event-loop time; the indent shows what nests in what
    ("HTTP request task, whole (uvicorn run_asgi)", "uvicorn/protocols/http/httptools_impl.py", "run_asgi"),
    ("  access middleware: authenticate the key", "trellis/auth/_keys.py", "authenticate"),
    ("  access middleware: audit row of the POST", "trellis/api/_access.py", "_audit"),
    ("  route create_run", "trellis/api/_runs.py", "create_run"),
    ("    Engine.submit (resolve, create_run, wake)", "trellis/runtime/_engine.py", "submit"),
    ("    wait_until_settled (bus, get_run)", "trellis/api/_runs.py", "wait_until_settled"),
    ("HTTP bytes in, outside the request task (data_received)", "httptools_impl.py", "data_received"),
    ("worker loop (claim_runs, idle waits)", "trellis/queue/__init__.py", "run"),
    ("worker: Executor.run_claimed, whole", "trellis/runtime/_execute.py", "run_claimed"),
    ("  Engine.compiled (cache lookup)", "trellis/runtime/_engine.py", "compiled"),
    ("  Executor._start (state read, run.started)", "trellis/runtime/_execute.py", "_start"),
    ("execution task: Executor._drive (graph astream)", "trellis/runtime/_execute.py", "_drive"),
    ("  FencedSaver.aput (checkpoints)", "trellis/runtime/_fence.py", "aput"),
    ("  FencedSaver.aput_writes (pending writes)", "trellis/runtime/_fence.py", "aput_writes"),
    ("  RunTracker.on_chunk (events, node states)", "trellis/runtime/_tracker.py", "on_chunk"),
    ("execution task: Executor._outcome (final state read)", "trellis/runtime/_execute.py", "_outcome"),
    ("Recorder.flush, every caller (store.record, publish)", "trellis/runtime/_recorder.py", "flush"),
    ("lease/command watcher (Executor._watch)", "trellis/runtime/_execute.py", "_watch"),
    ("Store.get_run, every caller", "trellis/store/_store.py", "get_run"),
)

COUNTS: tuple[tuple[str, str, str], ...] = (
    # (label, file suffix or "~", function): exact call counts (plain functions and builtins only).
    # The loop's own counts exist only on asyncio's loop: uvloop's is compiled, cProfile sees nothing.
    ("event-loop iterations", "~", "<method 'poll' of 'select.epoll' objects>"),
    ("callbacks run by the loop", "asyncio/events.py", "_run"),
    ("tasks created", "asyncio/base_events.py", "create_task"),
    ("hops to the store's SQLite threads", "concurrent/futures/thread.py", "submit"),
    ("wake-ups from threads (self-pipe reads)", "asyncio/selector_events.py", "_read_from_self"),
)


def classify(filename: str, function: str) -> str | None:
    """A function's component: the HTTP and API layers by package, the rest as the runtime bench does."""
    label = next((label for part, label in COMPONENTS if part in filename), None)
    if label is not None:
        return label
    label = component_of(filename, function)
    return IDLE if label == IDLE_SQLITE else label


def threads_cpu() -> dict[str, float]:
    """CPU seconds per group of this process's threads so far (Linux ``/proc``; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = {}
    for running in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{running.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        if running is threading.main_thread():
            group = LOOP
        elif running.name.startswith("trellis-sqlite-writer"):
            group = "store: SQLite writer thread"
        elif running.name.startswith("trellis-sqlite-reader"):
            group = "store: SQLite reader threads"
        elif "_connection_worker_thread" in running.name:
            group = "checkpointer: aiosqlite thread"
        else:
            group = "other threads"
        groups[group] = groups.get(group, 0.0) + seconds
    return groups


@contextlib.contextmanager
def counting_store_calls(engine: Engine) -> Iterator[Counter[str]]:
    """Count the store's calls, by method, until the block ends."""
    store = engine.store
    calls: Counter[str] = Counter()
    names = [
        name
        for name in dir(type(store))
        if not name.startswith("_") and inspect.iscoroutinefunction(getattr(type(store), name))
    ]

    def counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await method(*args, **kwargs)

        return call

    for name in names:
        setattr(store, name, counted(name, getattr(store, name)))
    try:
        yield calls
    finally:
        for name in names:
            delattr(store, name)  # back to the class's methods


@dataclass
class StoreThreads:
    """Transactions run on the SQLite store's threads, with the CPU each took on its thread."""

    writes: int = 0
    write_cpu_s: float = 0.0
    reads: int = 0
    read_cpu_s: float = 0.0
    writer_profile: cProfile.Profile | None = None
    """Enabled only while a write transaction runs on the writer thread."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def watching_store_threads(engine: Engine, *, profile_writes: bool) -> Iterator[StoreThreads | None]:
    """Time (and optionally profile) every transaction the SQLite store runs on its threads.

    Wraps the SQLite runner's ``_write`` and ``_read`` (what runs on its threads); yields ``None``
    for a store without them (PostgreSQL).
    """
    runner = getattr(engine.store, "_runner", None)
    real_write, real_read = getattr(runner, "_write", None), getattr(runner, "_read", None)
    if runner is None or real_write is None or real_read is None:
        yield None
        return
    seen = StoreThreads(writer_profile=cProfile.Profile(time.thread_time) if profile_writes else None)

    def write(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        cpu = time.thread_time()
        if seen.writer_profile is not None:
            seen.writer_profile.enable()
        try:
            return real_write(fn, *args, **kwargs)
        finally:
            if seen.writer_profile is not None:
                seen.writer_profile.disable()
            seen.writes += 1  # one writer thread: no lock needed
            seen.write_cpu_s += time.thread_time() - cpu

    def read(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        cpu = time.thread_time()
        try:
            return real_read(fn, *args, **kwargs)
        finally:
            with seen.lock:
                seen.reads += 1
                seen.read_cpu_s += time.thread_time() - cpu

    runner._write, runner._read = write, read
    try:
        yield seen
    finally:
        del runner._write, runner._read  # back to the class's methods


def _exact_counts(stats: dict[Any, Any], runs: int) -> dict[str, float]:
    counts = {}
    for label, suffix, function in COUNTS:
        calls = sum(
            row[1]
            for (filename, _, name), row in stats.items()
            if name == function and (filename == suffix if suffix == "~" else filename.endswith(suffix))
        )
        if calls:
            counts[label] = rounded(calls / runs, 1)
    aiosqlite = sum(
        edge[1]
        for (filename, _, name), row in stats.items()
        if name == "<method 'put_nowait' of '_queue.SimpleQueue' objects>"
        for (caller, _, _), edge in row[4].items()
        if "/aiosqlite/" in caller
    )
    if aiosqlite:
        counts["hops to the checkpointer's aiosqlite thread"] = rounded(aiosqlite / runs, 1)
    return counts


async def profile_service(
    engine: Engine, client: Client, runs: int, concurrency: int, max_seconds: float | None = None
) -> dict[str, Any]:
    """The three views of up to ``runs`` runs at ``concurrency``: an unprofiled block, then a
    profiled one (each stops starting runs after ``max_seconds``)."""
    settle()
    before = threads_cpu()
    with counting_store_calls(engine) as calls, watching_store_threads(engine, profile_writes=False) as plain:
        block = await client.wait(runs, concurrency, max_seconds)
    runs = block.runs
    threads = {k: (v - before.get(k, 0.0)) * 1000 / runs for k, v in threads_cpu().items()}

    settle()
    profile = cProfile.Profile()
    with watching_store_threads(engine, profile_writes=True) as profiled_store:
        profile.enable()
        profiled = await client.wait(runs, concurrency, max_seconds)
        profile.disable()

    totals = by_component(profile, classify)
    totals.pop(IDLE, None)  # waiting for sockets and threads, not work
    busy = sum(totals.values())
    loop_ms = threads.get(LOOP, 0.0)
    scale = loop_ms / (busy * 1000 / profiled.runs) if busy and loop_ms else 1.0
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    stages = {}
    for label, suffix, function in STAGES:
        seconds = sum(row[3] for key, row in stats.items() if key[0].endswith(suffix) and key[2] == function)
        stages[label] = {
            "amount": rounded(seconds * 1000 / profiled.runs * scale, 2),
            "share": rounded(seconds / busy),
        }
    report: dict[str, Any] = {
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "runs": runs,
        "concurrency": concurrency,
        "runs_per_second": rounded(block.runs_per_second),
        "profiled_runs_per_second": rounded(profiled.runs_per_second),
        "thread_cpu_ms_per_run": {k: rounded(v) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        "store_calls_per_run": {k: rounded(v / runs, 2) for k, v in calls.most_common()},
        "counts_per_run": _exact_counts(stats, profiled.runs),
        "profiled_loop_cpu_ms_per_run": rounded(busy * 1000 / profiled.runs),
        "scale_to_unprofiled": rounded(scale),
        "components_ms_per_run": shares(totals, 1000 / profiled.runs * scale),
        "stages_ms_per_run": stages,
    }
    if plain is not None and plain.writes and plain.reads:
        report["store_threads"] = {
            "writes_per_run": rounded(plain.writes / runs, 2),
            "cpu_ms_per_write": rounded(plain.write_cpu_s * 1000 / plain.writes),
            "reads_per_run": rounded(plain.reads / runs, 2),
            "cpu_ms_per_read": rounded(plain.read_cpu_s * 1000 / plain.reads),
        }
        if profiled_store is not None and profiled_store.writer_profile is not None and profiled_store.writes:
            writer = by_component(profiled_store.writer_profile)
            per_write = plain.write_cpu_s / plain.writes
            writer_scale = per_write / (sum(writer.values()) / profiled_store.writes)
            report["store_threads"]["writer_components_us_per_write"] = shares(
                writer, 1e6 / profiled_store.writes * writer_scale
            )
    return report


async def profile_floor(block: Callable[[], Awaitable[Block]]) -> dict[str, Any]:
    """The floor's CPU per thread and exact counts per run, for comparison with the service's."""
    settle()
    before = threads_cpu()
    plain = await block()
    threads = {k: (v - before.get(k, 0.0)) * 1000 / plain.runs for k, v in threads_cpu().items()}
    settle()
    profile = cProfile.Profile()
    profile.enable()
    profiled = await block()
    profile.disable()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return {
        "thread_cpu_ms_per_run": {k: rounded(v) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        "counts_per_run": _exact_counts(stats, profiled.runs),
    }


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The profile as indented report lines."""
    threads = profile["thread_cpu_ms_per_run"]
    rate, profiled_rate = profile["runs_per_second"], profile["profiled_runs_per_second"]
    total, loop = sum(threads.values()), threads.get(LOOP, 0.0)
    lines = [
        f"  where a run's time goes at concurrency {profile['concurrency']} ({profile['runs']} runs; "
        f"{rate:.1f} runs/s, {profiled_rate:.1f} under cProfile):",
        f"    CPU per run, unprofiled: {total:.2f} ms = "
        + " + ".join(f"{ms:.2f} {name}" for name, ms in threads.items() if ms > 0),
        f"    so the process used {total * rate / 1000:.2f} of {os.cpu_count()} CPUs and its event loop "
        f"({profile.get('event_loop', 'asyncio')}) "
        f"was busy {loop * rate / 1000:.0%} of the time (one GIL serialises the loop and the threads)",
        "    store calls per run: "
        + ", ".join(f"{name} {count:g}" for name, count in profile["store_calls_per_run"].items()),
        *_store_thread_lines(profile.get("store_threads")),
        "    per run: " + ", ".join(f"{count:g} {name}" for name, count in profile["counts_per_run"].items()),
        *_floor_lines(profile.get("floor")),
        f"    event loop CPU by component (cProfile, scaled x{profile['scale_to_unprofiled']:.2f} to the "
        "unprofiled CPU), ms per run:",
    ]
    lines += [
        f"    {row['amount']:7.2f}  {row['share']:6.1%}  {label}"
        for label, row in profile["components_ms_per_run"].items()
        if row["share"] >= 0.005
    ]
    lines.append("    event loop CPU by stage (cumulative, nested as indented; same scale), ms per run:")
    lines += [
        f"    {row['amount']:7.2f}  {row['share']:6.1%}  {label}"
        for label, row in profile["stages_ms_per_run"].items()
    ]
    return lines


def _store_thread_lines(store: dict[str, Any] | None) -> list[str]:
    if store is None:
        return []
    writes, reads = store["writes_per_run"], store["reads_per_run"]
    line = (
        f"    store transactions per run: {writes:g} writes x {store['cpu_ms_per_write']:.2f} ms CPU "
        f"= {writes * store['cpu_ms_per_write']:.2f} ms on the writer thread, {reads:g} reads x "
        f"{store['cpu_ms_per_read']:.2f} ms = {reads * store['cpu_ms_per_read']:.2f} ms on the readers"
    )
    components = store.get("writer_components_us_per_write", {})
    if components:
        line += "; a write: " + ", ".join(
            f"{row['share']:.0%} {label}" for label, row in components.items() if row["share"] >= 0.02
        )
    return [line]


def _floor_lines(floor: dict[str, Any] | None) -> list[str]:
    if floor is None:
        return []
    threads = floor["thread_cpu_ms_per_run"]
    return [
        f"    the floor, same concurrency: CPU {sum(threads.values()):.2f} ms/run = "
        + " + ".join(f"{ms:.2f} {name}" for name, ms in threads.items() if ms > 0)
        + "; per run: "
        + ", ".join(f"{count:g} {name}" for name, count in floor["counts_per_run"].items() if count)
    ]
