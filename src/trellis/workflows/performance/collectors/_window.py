"""Windows: what happened between two (or more) scrapes of one instance.

Counters and histograms are cumulative since process start, so lifetime averages hide what the
server does *now*. A :class:`Window` holds the increase of every counter and the bucket-wise
difference of every histogram between the first and the last scrape, summed pair by pair over
the scrapes in between the way Prometheus' ``increase()`` does: when a counter goes down the
process restarted, and the value after the drop is the increase since the restart. Gauges
(running, waiting, KV usage) cannot be differenced; the window keeps their statistics over the
scrapes it was built from, so pass every scrape of the window, not only both ends, when gauge
behaviour matters (the bottleneck rules want at least five).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from trellis.workflows.performance.collectors._types import (
    Distribution,
    Histogram,
    Scrape,
    ServerType,
    Summary,
)
from trellis.workflows.performance.errors import AnalysisError

COUNTERS: tuple[str, ...] = (
    "preemptions",
    "prompt_tokens",
    "generation_tokens",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "requests_finished",
    "requests_failed",
    "requests_aborted",
    "spec_draft_tokens",
    "spec_accepted_tokens",
)
"""Cumulative :class:`Scrape` fields a window turns into increases."""

GAUGES: tuple[str, ...] = (
    "requests_running",
    "requests_waiting",
    "kv_cache_usage",
    "retracted_requests",
    "prefix_cache_hit_rate",
    "spec_accept_rate",
    "generation_throughput",
)
"""Instantaneous :class:`Scrape` fields a window summarises with :class:`GaugeStats`."""

DISTRIBUTIONS: tuple[str, ...] = ("ttft", "itl", "e2e", "queue_time", "prefill_time")
"""Distribution fields a window differences bucket by bucket."""

LatencyMetric = Literal["ttft", "itl", "e2e", "queue_time", "prefill_time"]


@dataclass(frozen=True, slots=True)
class GaugeStats:
    """A gauge sampled at every scrape of a window."""

    mean: float
    minimum: float
    maximum: float
    last: float
    samples: int
    """Scrapes that carried the gauge."""
    positive_share: float
    """Share of those scrapes where the gauge was above zero (e.g. "queue non-empty")."""

    @classmethod
    def of(cls, values: Sequence[float]) -> GaugeStats:
        return cls(
            mean=sum(values) / len(values),
            minimum=min(values),
            maximum=max(values),
            last=values[-1],
            samples=len(values),
            positive_share=sum(1 for v in values if v > 0) / len(values),
        )

    @classmethod
    def pooled(cls, parts: Sequence[GaugeStats]) -> GaugeStats:
        """Statistics over the union of the samples of ``parts`` (``last`` is the parts' mean)."""
        samples = sum(p.samples for p in parts)
        return cls(
            mean=sum(p.mean * p.samples for p in parts) / samples,
            minimum=min(p.minimum for p in parts),
            maximum=max(p.maximum for p in parts),
            last=sum(p.last for p in parts) / len(parts),
            samples=samples,
            positive_share=sum(p.positive_share * p.samples for p in parts) / samples,
        )


def _cumulative_at(histogram: Histogram, bound: float) -> float:
    """Observations ``<= bound`` that ``histogram`` can vouch for (its largest bucket below)."""
    result = 0.0
    for upper, count in histogram.buckets:
        if upper > bound:
            break
        result = count
    return result


def add_histograms(parts: Iterable[Histogram]) -> Histogram:
    """Sum histograms bucket by bucket.

    Layouts normally agree (same server version). When they do not, each part contributes, at
    every bound of the union, the count of its largest bucket at or below that bound: an
    under-estimate inside a bucket, but always cumulative and never invented.
    """
    items = list(parts)
    bounds = sorted({bound for h in items for bound, _ in h.buckets})
    buckets = tuple((bound, sum(_cumulative_at(h, bound) for h in items)) for bound in bounds)
    return Histogram(buckets=buckets, count=sum(h.count for h in items), sum=sum(h.sum for h in items))


def _histogram_increase(before: Histogram, after: Histogram) -> tuple[Histogram, bool]:
    """``after - before`` bucket-wise, and whether the process restarted in between."""
    layout_changed = [b for b, _ in before.buckets] != [b for b, _ in after.buckets]
    went_down = after.count < before.count or any(
        a < b for (_, b), (_, a) in zip(before.buckets, after.buckets, strict=False)
    )
    if layout_changed or went_down:
        return after, True
    buckets = tuple((bound, a - b) for (bound, a), (_, b) in zip(after.buckets, before.buckets, strict=True))
    return Histogram(buckets=buckets, count=after.count - before.count, sum=after.sum - before.sum), False


def _distribution_increase(values: Sequence[Distribution]) -> tuple[Distribution, bool]:
    if all(isinstance(v, Histogram) for v in values):
        histograms = [v for v in values if isinstance(v, Histogram)]
        pieces: list[Histogram] = []
        reset = False
        for before, after in itertools.pairwise(histograms):
            piece, restarted = _histogram_increase(before, after)
            pieces.append(piece)
            reset = reset or restarted
        return add_histograms(pieces), reset
    # Summaries: only _sum and _count difference; the quantiles stay the exporter's latest.
    count = total = 0.0
    reset = False
    for earlier, later in itertools.pairwise(values):
        if later.count < earlier.count:
            count, total, reset = count + later.count, total + later.sum, True
        else:
            count, total = count + later.count - earlier.count, total + later.sum - earlier.sum
    last = values[-1]
    quantiles = last.quantiles if isinstance(last, Summary) else ()
    return Summary(quantiles=quantiles, count=count, sum=total), reset


def _counter_increase(values: Sequence[float]) -> tuple[float, bool]:
    total = 0.0
    reset = False
    for before, after in itertools.pairwise(values):
        if after < before:
            total += after
            reset = True
        else:
            total += after - before
    return total, reset


@dataclass(frozen=True, slots=True)
class Window:
    """Activity of one instance (or a pooled group, see :func:`combine`) between two times.

    Build it with :func:`window`. ``increases`` and the distributions are *window* figures:
    requests finished in the window, the TTFT of requests that got their first token in it.
    A counter or distribution is missing when the first or the last scrape lacks it.
    """

    server: ServerType
    start: float
    """Timestamp of the first scrape, Unix seconds."""
    end: float
    """Timestamp of the last scrape, Unix seconds."""
    scrapes: int
    """Scrapes the window was built from (summed over instances when pooled)."""
    instances: int = 1
    sources: tuple[str, ...] = ()
    gauges: Mapping[str, GaugeStats] = field(default_factory=lambda: MappingProxyType({}))
    """Statistics of each gauge in :data:`GAUGES` that the scrapes carried."""
    increases: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Increase of each counter in :data:`COUNTERS` present at both ends."""
    finished_by_reason: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    failed_by_reason: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    distributions: Mapping[str, Distribution] = field(default_factory=lambda: MappingProxyType({}))
    """Window increase of each distribution in :data:`DISTRIBUTIONS` present at both ends."""
    resets: tuple[str, ...] = ()
    """Fields whose cumulative value went down inside the window (process restart)."""
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Static configuration exported by the last scrape."""
    max_running_requests: float | None = None

    @property
    def seconds(self) -> float:
        """Length of the window, seconds."""
        return self.end - self.start

    def gauge(self, name: str) -> GaugeStats | None:
        return self.gauges.get(name)

    def increase(self, name: str) -> float | None:
        """Increase of counter ``name`` over the window; ``None`` when not exported."""
        return self.increases.get(name)

    def rate(self, name: str) -> float | None:
        """Per-second rate of counter ``name`` (per instance when pooled); ``None`` without data."""
        value = self.increases.get(name)
        if value is None or self.seconds <= 0:
            return None
        return value / self.seconds / self.instances

    def distribution(self, name: LatencyMetric | str) -> Distribution | None:
        return self.distributions.get(name)

    def quantile(self, name: LatencyMetric | str, q: float) -> float | None:
        """``q``-quantile of a distribution over the window (bucket deltas, interpolated).

        For a summary (no buckets) this is the exporter's own, un-windowed quantile.
        """
        distribution = self.distributions.get(name)
        return None if distribution is None else distribution.quantile(q)

    def mean(self, name: LatencyMetric | str) -> float | None:
        distribution = self.distributions.get(name)
        return None if distribution is None else distribution.mean

    def describe(self) -> dict[str, object]:
        """Where and when, for evidence records: ``{start, end, seconds, scrapes, instances}``."""
        return {
            "start": self.start,
            "end": self.end,
            "seconds": round(self.seconds, 3),
            "scrapes": self.scrapes,
            "instances": self.instances,
        }

    def __repr__(self) -> str:
        return (
            f"Window(server={self.server.value!r}, seconds={self.seconds:.1f}, scrapes={self.scrapes}, "
            f"instances={self.instances}, resets={list(self.resets)})"
        )


def _reason_increase(maps: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], bool]:
    keys = {k for m in maps for k in m}
    result: dict[str, float] = {}
    reset = False
    for key in sorted(keys):
        # Labelled series appear on their first increment: absent means zero so far.
        value, restarted = _counter_increase([m.get(key, 0.0) for m in maps])
        result[key] = value
        reset = reset or restarted
    return result, reset


def window(*scrapes: Scrape) -> Window:
    """The window spanned by ``scrapes`` of one instance (at least two; any order).

    ``window(a, b)`` gives rates and quantiles between two scrapes; passing every scrape taken
    in between also catches restarts inside the window and gives the gauges their statistics.

    Raises:
        AnalysisError: fewer than two scrapes, mixed servers or instances, or equal timestamps.
    """
    if len(scrapes) < 2:
        raise AnalysisError(f"a window needs at least two scrapes, got {len(scrapes)}")
    ordered = sorted(scrapes, key=lambda s: s.timestamp)
    servers = {s.server for s in ordered}
    sources = {s.source for s in ordered}
    if len(servers) > 1:
        raise AnalysisError(
            f"a window needs scrapes of one server type, got {sorted(s.value for s in servers)}"
        )
    if len(sources) > 1:
        raise AnalysisError(f"a window needs scrapes of one instance, got sources {sorted(sources)}")
    first, last = ordered[0], ordered[-1]
    if last.timestamp <= first.timestamp:
        raise AnalysisError(f"a window needs scrapes at different times, all are at {first.timestamp}")

    resets: list[str] = []
    gauges: dict[str, GaugeStats] = {}
    for name in GAUGES:
        values = [v for s in ordered if (v := getattr(s, name)) is not None and not math.isnan(v)]
        if values:
            gauges[name] = GaugeStats.of(values)
    increases: dict[str, float] = {}
    for name in COUNTERS:
        if getattr(first, name) is None or getattr(last, name) is None:
            continue
        increase, reset = _counter_increase([v for s in ordered if (v := getattr(s, name)) is not None])
        increases[name] = increase
        if reset:
            resets.append(name)
    distributions: dict[str, Distribution] = {}
    for name in DISTRIBUTIONS:
        if getattr(first, name) is None or getattr(last, name) is None:
            continue
        values = [v for s in ordered if (v := getattr(s, name)) is not None]
        distributions[name], reset = _distribution_increase(values)
        if reset:
            resets.append(name)
    finished, finished_reset = _reason_increase([s.finished_by_reason for s in ordered])
    failed, failed_reset = _reason_increase([s.failed_by_reason for s in ordered])
    if finished_reset:
        resets.append("finished_by_reason")
    if failed_reset:
        resets.append("failed_by_reason")
    return Window(
        server=first.server,
        start=first.timestamp,
        end=last.timestamp,
        scrapes=len(ordered),
        sources=(first.source,),
        gauges=MappingProxyType(gauges),
        increases=MappingProxyType(increases),
        finished_by_reason=MappingProxyType(finished),
        failed_by_reason=MappingProxyType(failed),
        distributions=MappingProxyType(distributions),
        resets=tuple(resets),
        config=last.config,
        max_running_requests=last.max_running_requests,
    )


def _sum_maps(maps: Sequence[Mapping[str, float]], *, require_all: bool) -> dict[str, float]:
    keys = set.intersection(*(set(m) for m in maps)) if require_all else {k for m in maps for k in m}
    return {k: sum(m.get(k, 0.0) for m in maps) for k in sorted(keys)}


def combine(windows: Sequence[Window]) -> Window:
    """Pool the windows of several instances of one server type (a canary or baseline group).

    Counters and distributions are summed (a counter or distribution missing from one instance
    is dropped from the pool), gauge statistics are pooled over all samples, so a pooled
    ``requests_waiting`` mean is the mean per instance.

    Raises:
        AnalysisError: no windows, or windows of different server types.
    """
    if not windows:
        raise AnalysisError("combine() needs at least one window")
    if len(windows) == 1:
        return windows[0]
    servers = {w.server for w in windows}
    if len(servers) > 1:
        raise AnalysisError(f"cannot pool windows of different servers: {sorted(s.value for s in servers)}")
    gauge_names = set.intersection(*(set(w.gauges) for w in windows))
    distributions: dict[str, Distribution] = {}
    for name in DISTRIBUTIONS:
        parts = [w.distributions.get(name) for w in windows]
        present = [p for p in parts if p is not None]
        if len(present) != len(parts):
            continue
        if all(isinstance(p, Histogram) for p in present):
            distributions[name] = add_histograms(p for p in present if isinstance(p, Histogram))
        else:
            distributions[name] = Summary(
                quantiles=(), count=sum(p.count for p in present), sum=sum(p.sum for p in present)
            )
    caps = [w.max_running_requests for w in windows]
    return Window(
        server=windows[0].server,
        start=min(w.start for w in windows),
        end=max(w.end for w in windows),
        scrapes=sum(w.scrapes for w in windows),
        instances=sum(w.instances for w in windows),
        sources=tuple(s for w in windows for s in w.sources),
        gauges=MappingProxyType(
            {name: GaugeStats.pooled([w.gauges[name] for w in windows]) for name in sorted(gauge_names)}
        ),
        increases=MappingProxyType(_sum_maps([w.increases for w in windows], require_all=True)),
        finished_by_reason=MappingProxyType(
            _sum_maps([w.finished_by_reason for w in windows], require_all=False)
        ),
        failed_by_reason=MappingProxyType(
            _sum_maps([w.failed_by_reason for w in windows], require_all=False)
        ),
        distributions=MappingProxyType(distributions),
        resets=tuple(sorted({r for w in windows for r in w.resets})),
        config=windows[0].config,
        max_running_requests=None if None in caps else sum(c for c in caps if c is not None),
    )
