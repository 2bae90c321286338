"""cProfile, read by component: whose code the main thread spends its time in.

Self time is grouped by the package a function lives in; a builtin's time (``isinstance``,
``dict.get``...) is charged to the component of each caller, so "stdlib" does not swallow it.
The event loop's ``epoll`` wait is its own row: time the loop sat idle, which in these
benchmarks means waiting for SQLite worker threads (aiosqlite's and the store's writer).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import compile as compile_bench
from benchmarks._graphs import linear_definition, tools
from benchmarks._harness import settle
from benchmarks.runtime import LINEAR_NODES, Run
from trellis.runtime import Engine

COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/trellis/runtime/", "trellis.runtime (executor, tracker, recorder)"),
    ("/trellis/store/", "trellis.store"),
    ("/trellis/nodes/", "trellis.nodes (wrapper, tool body, emit)"),
    ("/trellis/expressions/", "trellis.expressions"),
    ("/trellis/", "trellis (compiler, dsl, other)"),
    ("/langgraph/checkpoint/", "langgraph checkpointer + serde"),
    ("/langgraph/", "langgraph (pregel loop, graph compile)"),
    ("/langchain_core/", "langchain_core (config, callbacks)"),
    ("/aiosqlite/", "aiosqlite"),
    ("/sqlalchemy/", "sqlalchemy"),
    ("/pydantic", "pydantic"),
    ("/yaml/", "PyYAML (pure-Python parser)"),
    ("/dis.py", "dis (LangGraph disassembling node closures)"),
    ("/asyncio/", "asyncio machinery"),
    ("selectors.py", "asyncio machinery"),
)
IDLE = "event loop idle (waiting for SQLite threads)"
SQLITE = "sqlite3 C calls (execute, commit)"


def component_of(filename: str, function: str) -> str | None:
    if filename == "~":
        if "poll" in function and "epoll" in function:
            return IDLE
        return SQLITE if "sqlite3." in function else None
    return next((label for part, label in COMPONENTS if part in filename), "stdlib and other")


def by_component(
    profile: cProfile.Profile, classify: Callable[[str, str], str | None] = component_of
) -> dict[str, float]:
    """Self seconds per component; a builtin's time goes to the component of each caller.

    ``classify(filename, function)`` names a function's component (``None`` for a builtin).
    """
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _, function), (_, _, self_time, _, callers) in stats.items():
        label = classify(filename, function)
        if label is not None:
            totals[label] = totals.get(label, 0.0) + self_time
            continue
        for (caller_file, _, caller_fn), edge in callers.items():
            caller_label = classify(caller_file, caller_fn) or "stdlib and other"
            totals[caller_label] = totals.get(caller_label, 0.0) + edge[2]
    return totals


def shares(totals: dict[str, float], scale: float) -> dict[str, dict[str, float]]:
    """Per component: seconds times ``scale`` (µs per node, ms per compile...) and share of the total."""
    whole = sum(totals.values())
    return {
        label: {"amount": round(seconds * scale, 2), "share": round(seconds / whole, 3)}
        for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1])
    }


async def hotspots(full: Run, runs: int, dump: Path | None) -> dict[str, Any]:
    for i in range(5):
        await full(-100 - i)
    settle()
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for i in range(runs):
        await full(10_000 + i)
    profile.disable()
    wall = time.perf_counter() - started
    if dump is not None:
        profile.dump_stats(dump)
    per_node_us = 1e6 / (runs * LINEAR_NODES)
    rows = shares(by_component(profile), per_node_us)
    functions = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    trellis = sorted(((k, v[3]) for k, v in functions.items() if "/trellis/" in k[0]), key=lambda kv: -kv[1])
    trellis = trellis[:15]
    return {
        "profiled_wall_ms_per_run": round(wall * 1000 / runs, 2),
        "components_us_per_node": rows,
        "trellis_functions_cumulative_us_per_node": {
            f"{Path(k[0]).name}:{k[1]}({k[2]})": round(seconds * per_node_us, 1) for k, seconds in trellis
        },
    }


async def writer_thread(engine: Engine, full: Run, runs: int) -> dict[str, Any]:
    """cProfile of the store's writer thread (SQLite only): what one ``Store`` write transaction costs.

    Wraps the SQLite runner's ``_write`` (run on its single writer thread) so the profiler is on
    exactly while a transaction runs there; skipped when the store has no such runner.
    """
    runner = getattr(engine.store, "_runner", None)
    real = getattr(runner, "_write", None)
    if runner is None or real is None:
        return {"skipped": "the store has no SQLite writer thread"}
    profile = cProfile.Profile()
    writes = 0

    def profiled(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        profile.enable()
        try:
            return real(fn, *args, **kwargs)
        finally:
            profile.disable()

    runner._write = profiled
    try:
        for i in range(runs):
            await full(20_000 + i)
    finally:
        del runner._write  # back to the class's method
    if writes == 0:
        return {"skipped": "no transaction went to the writer thread: they all ran inline on the event loop"}
    totals = by_component(profile)
    return {
        "writes_per_run": round(writes / runs, 1),
        "profiled_ms_per_write": round(sum(totals.values()) * 1000 / writes, 3),
        "components_us_per_write": shares(totals, 1e6 / writes),
    }


def compile_hotspots(repetitions: int) -> dict[str, dict[str, float]]:
    """cProfile of load + validate + compile of the 50-node definition, by component (ms/compile)."""
    registry = tools()
    text = linear_definition(compile_bench.NODES, name="bench-compile-50")
    loop = asyncio.new_event_loop()
    try:
        compile_bench.trellis_once(text, registry, loop)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(repetitions):
            compile_bench.trellis_once(text, registry, loop)
        profile.disable()
    finally:
        loop.close()
    return shares(by_component(profile), 1000 / repetitions)
