"""What every benchmark shares: the machine's description, timing statistics, result lines.

A benchmark produces :class:`Result` values. Each one compares a Trellis measurement with a
baseline measured in the same process a moment before or after, and knows its target, so the
report line, the PASS/FAIL verdict and the JSON summary all come from one place.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["PASS", "FAIL", "INFO", "SKIP"]
"""``INFO`` for a line that has no target: it is reported, not judged; ``SKIP`` for a
measurement that could not be taken here (a missing database server)."""

BUSY_LOAD_PER_CORE = 0.5
"""A 1-minute load average above this many runnable processes per core makes the machine
"busy": the report says so, because checkpoint costs are very noise-sensitive."""


@dataclass(frozen=True, slots=True)
class Machine:
    """Where and under which load the numbers were taken."""

    cpus: int
    load_average: tuple[float, float, float]
    """1, 5 and 15-minute load averages (runnable processes) when the snapshot was taken."""
    python: str
    platform: str
    versions: Mapping[str, str]
    """Installed versions of the packages whose code is on the measured path."""

    @classmethod
    def snapshot(cls) -> Machine:
        versions: dict[str, str] = {}
        for package in ("trellis", "langgraph", "langgraph-checkpoint-sqlite", "aiosqlite", "sqlalchemy"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = "not installed"
        return cls(
            cpus=os.cpu_count() or 1,
            load_average=os.getloadavg(),
            python=platform.python_version(),
            platform=platform.platform(terse=True),
            versions=versions,
        )

    @property
    def busy(self) -> bool:
        return self.load_average[0] > BUSY_LOAD_PER_CORE * self.cpus

    def describe(self) -> str:
        one, five, fifteen = self.load_average
        text = f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {self.cpus} CPUs"
        if self.busy:
            text += " -- BUSY: other processes compete for the CPUs, expect noisy, inflated numbers"
        return text


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of repeated measurements, in milliseconds."""

    median: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        return cls(
            median=statistics.median(samples_ms),
            minimum=min(samples_ms),
            maximum=max(samples_ms),
            count=len(samples_ms),
        )

    def spread(self) -> str:
        return f"{self.minimum:.2f}..{self.maximum:.2f} ms over {self.count}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a result is judged against: the ratio, or the overhead over a floor."""

    text: str
    """How the target reads in the report, e.g. ``<= 1.5x``."""
    max_ratio: float | None = None
    max_overhead_ms: float | None = None
    min_value: float | None = None
    """Trellis's median must reach this, in the result's unit (a throughput floor: runs/s)."""
    max_value: float | None = None
    """Trellis's median must not exceed this, in the result's unit (a latency budget: ms)."""


NO_TARGET = Target("none, reported only")


@dataclass(frozen=True, slots=True)
class Result:
    """One benchmark line: Trellis vs its baseline, both measured in this run."""

    name: str
    trellis: Stats
    baseline: Stats
    baseline_label: str
    """What the baseline is (``LangGraph compile``, ``500 ms floor``...)."""
    unit: str
    """Unit of the headline numbers (``ms``, ``ms/run``)."""
    target: Target = NO_TARGET
    notes: Mapping[str, Any] = field(default_factory=dict)
    """Secondary measurements: breakdowns, per-node costs, percentiles."""

    @property
    def ratio(self) -> float:
        return self.trellis.median / self.baseline.median

    @property
    def overhead_ms(self) -> float:
        return self.trellis.median - self.baseline.median

    @property
    def verdict(self) -> Verdict:
        checks: list[bool] = []
        if self.target.max_ratio is not None:
            checks.append(self.ratio <= self.target.max_ratio)
        if self.target.max_overhead_ms is not None:
            checks.append(self.overhead_ms <= self.target.max_overhead_ms)
        if self.target.min_value is not None:
            checks.append(self.trellis.median >= self.target.min_value)
        if self.target.max_value is not None:
            checks.append(self.trellis.median <= self.target.max_value)
        if not checks:
            return "INFO"
        return "PASS" if all(checks) else "FAIL"

    def line(self) -> str:
        """``name: trellis X vs baseline Y → ratio R (target T) PASS/FAIL``."""
        target = self.target.text
        if self.target.max_overhead_ms is not None:
            target += f"; overhead {self.overhead_ms:+.1f} ms"
        return (
            f"{self.name}: trellis {self.trellis.median:.2f} {self.unit} vs "
            f"baseline {self.baseline.median:.2f} {self.unit} ({self.baseline_label}) "
            f"→ ratio {self.ratio:.2f} (target {target}) {self.verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "trellis": _rounded_fields(asdict(self.trellis)),
            "baseline": {"label": self.baseline_label, **_rounded_fields(asdict(self.baseline))},
            "ratio": round(self.ratio, 4),
            "overhead_ms": round(self.overhead_ms, 3),
            "target": {k: v for k, v in asdict(self.target).items() if v is not None},
            "verdict": self.verdict,
            "notes": dict(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A benchmark line that could not be measured on this machine, and why."""

    name: str
    reason: str

    @property
    def verdict(self) -> Verdict:
        return "SKIP"

    def line(self) -> str:
        return f"{self.name}: skipped: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "reason": self.reason}


def _rounded_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rounded(v) if isinstance(v, float) else v for k, v in fields.items()}


def settle() -> None:
    """Collect garbage before a timed phase, so one phase does not pay for the last one's."""
    gc.collect()


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``samples``."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)
