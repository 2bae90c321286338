"""Validate + compile a 50-node definition vs LangGraph compiling the same graph built by hand.

Trellis side, per repetition: ``load_document`` (YAML parse) + ``validate`` (schema, models,
semantic checks, expression checks) + ``Compiler.compile`` on a *fresh* :class:`Compiler`, so
its cache never answers. Baseline, per repetition: build the 50-node ``StateGraph`` with
``add_node``/``add_edge`` and ``compile()`` it. Neither side gets a checkpointer (attaching one
is a reference assignment on both sides).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks._graphs import linear_builder, linear_definition, tools
from benchmarks._harness import Result, Stats, percentile, rounded, settle
from trellis.compiler import Compiler
from trellis.dsl import content_hash, load_document, validate
from trellis.nodes._env import BuildEnv
from trellis.registry import Registry

NODES = 50
REPETITIONS = 30
WARMUP = 3


@dataclass(frozen=True, slots=True)
class Phases:
    """Milliseconds spent in each Trellis phase of one repetition."""

    load: float
    validate: float
    compile: float

    @property
    def total(self) -> float:
        return self.load + self.validate + self.compile


def trellis_once(text: str, registry: Registry, loop: asyncio.AbstractEventLoop) -> Phases:
    t0 = time.perf_counter()
    document = load_document(text, "bench.yaml")
    t1 = time.perf_counter()
    report = validate(document.data, document)
    t2 = time.perf_counter()
    workflow = report.workflow
    if workflow is None:
        problems = "; ".join(d.message for d in report.diagnostics)
        raise RuntimeError(f"the benchmark definition is invalid: {problems}")
    compiler = Compiler(BuildEnv(registry=registry))
    loop.run_until_complete(compiler.compile(workflow, content_hash(document.data)))
    t3 = time.perf_counter()
    return Phases(load=(t1 - t0) * 1000, validate=(t2 - t1) * 1000, compile=(t3 - t2) * 1000)


def _baseline_phases(repetitions: int) -> tuple[list[float], list[float]]:
    """(build ms, compile ms) per repetition of the hand-built graph."""
    builds: list[float] = []
    compiles: list[float] = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        builder = linear_builder(NODES)
        t1 = time.perf_counter()
        builder.compile()
        t2 = time.perf_counter()
        builds.append((t1 - t0) * 1000)
        compiles.append((t2 - t1) * 1000)
    return builds, compiles


def _interleaved(
    trellis: Callable[[], Phases], repetitions: int
) -> tuple[list[Phases], list[float], list[float]]:
    """Alternate the two sides in small blocks so a load spike hits both, not one."""
    phases: list[Phases] = []
    builds: list[float] = []
    compiles: list[float] = []
    block = 5
    for start in range(0, repetitions, block):
        size = min(block, repetitions - start)
        settle()
        phases.extend(trellis() for _ in range(size))
        settle()
        more_builds, more_compiles = _baseline_phases(size)
        builds += more_builds
        compiles += more_compiles
    return phases, builds, compiles


def run(repetitions: int = REPETITIONS) -> Result:
    """Measure both sides; the headline compares the full Trellis path with build + compile."""
    text = linear_definition(NODES, name="bench-compile-50")
    registry = tools()
    loop = asyncio.new_event_loop()
    try:
        for _ in range(WARMUP):  # imports, CEL/Jinja environments, LangGraph's first-compile caches
            trellis_once(text, registry, loop)
            linear_builder(NODES).compile()
        phases, builds, compiles = _interleaved(lambda: trellis_once(text, registry, loop), repetitions)
    finally:
        loop.close()
    totals = [p.total for p in phases]
    baseline = [b + c for b, c in zip(builds, compiles, strict=True)]
    compile_only = Stats.of(compiles)
    trellis_compile = Stats.of([p.compile for p in phases])
    notes: dict[str, Any] = {
        "nodes": NODES,
        "repetitions": repetitions,
        "trellis_phases_median_ms": {
            "load_document": rounded(Stats.of([p.load for p in phases]).median),
            "validate": rounded(Stats.of([p.validate for p in phases]).median),
            "compile": rounded(trellis_compile.median),
        },
        "baseline_phases_median_ms": {
            "build": rounded(Stats.of(builds).median),
            "compile": rounded(compile_only.median),
        },
        "trellis_p90_ms": rounded(percentile(totals, 0.9)),
        "baseline_p90_ms": rounded(percentile(baseline, 0.9)),
        "compile_vs_compile_ratio": rounded(trellis_compile.median / compile_only.median),
    }
    return Result(
        name=f"compile-{NODES}",
        trellis=Stats.of(totals),
        baseline=Stats.of(baseline),
        baseline_label="LangGraph build + compile",
        unit="ms",
        notes=notes,
    )


def details(result: Result) -> list[str]:
    """Indented lines under the headline: where the Trellis milliseconds go."""
    trellis = result.notes["trellis_phases_median_ms"]
    baseline = result.notes["baseline_phases_median_ms"]
    return [
        f"  trellis medians: load {trellis['load_document']:.2f} + validate {trellis['validate']:.2f} "
        f"+ compile {trellis['compile']:.2f} ms ({result.trellis.spread()})",
        f"  langgraph medians: build {baseline['build']:.2f} + compile {baseline['compile']:.2f} ms "
        f"({result.baseline.spread()}); compile alone vs compile alone: "
        f"{result.notes['compile_vs_compile_ratio']:.2f}x",
    ]
