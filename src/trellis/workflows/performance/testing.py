"""Builders of crafted windows, for testing rules and canary checks without a server.

A team that adds a row to the rule table can test it the way the bundled rules are tested::

    from trellis.workflows.performance.testing import crafted_window, histogram

    w = crafted_window(gauges={"kv_cache_usage": 0.96, "requests_waiting": 4})
    assert "kv-cache-pressure" in [f.rule_id for f in analyze(w).findings]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from trellis.workflows.performance.collectors import Histogram, Scrape, ServerType, Window, window

LATENCY_BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


__all__ = ["LATENCY_BOUNDS", "crafted_window", "histogram"]


def histogram(counts: Mapping[float, float], bounds: Sequence[float] = LATENCY_BOUNDS) -> Histogram:
    """A cumulative histogram with ``counts[bound]`` observations in the bucket ending at ``bound``.

    Each observation is accounted at its bucket's upper bound in ``sum``.
    """
    unknown = set(counts) - set(bounds) - {math.inf}
    assert not unknown, f"bounds not in the layout: {unknown}"
    cumulative: list[tuple[float, float]] = []
    running = 0.0
    for bound in (*bounds, math.inf):
        running += counts.get(bound, 0.0)
        cumulative.append((bound, running))
    total = sum(c * (b if math.isfinite(b) else bounds[-1]) for b, c in counts.items())
    return Histogram(buckets=tuple(cumulative), count=running, sum=total)


def _scale(h: Histogram, f: float) -> Histogram:
    return Histogram(buckets=tuple((b, c * f) for b, c in h.buckets), count=h.count * f, sum=h.sum * f)


def crafted_window(
    server: ServerType = ServerType.VLLM,
    *,
    scrapes: int = 6,
    interval: float = 10.0,
    gauges: Mapping[str, float | Sequence[float]] | None = None,
    increases: Mapping[str, float] | None = None,
    distributions: Mapping[str, Histogram] | None = None,
    finished_by_reason: Mapping[str, float] | None = None,
    failed_by_reason: Mapping[str, float] | None = None,
    config: Mapping[str, str] | None = None,
    source: str = "crafted",
) -> Window:
    """A window over ``scrapes`` evenly spaced scrapes.

    ``gauges`` are constants or one value per scrape; ``increases`` and ``distributions`` are
    what the whole window should show (spread evenly over the scrapes, on top of a lifetime
    offset so that lifetime figures differ from window figures).
    """
    gauges, increases, distributions = gauges or {}, increases or {}, distributions or {}
    built: list[Scrape] = []
    for i in range(scrapes):
        share = i / (scrapes - 1)
        fields: dict[str, Any] = {}
        for name, value in gauges.items():
            fields[name] = value[i] if isinstance(value, Sequence) else value
        for name, value in increases.items():
            fields[name] = 1000.0 + value * share
        for name, h in distributions.items():
            base = _scale(h, 0.0 if share == 0 else share)
            fields[name] = base
        if finished_by_reason is not None:
            fields["finished_by_reason"] = {k: 100.0 + v * share for k, v in finished_by_reason.items()}
        if failed_by_reason is not None:
            fields["failed_by_reason"] = {k: 100.0 + v * share for k, v in failed_by_reason.items()}
        built.append(
            Scrape(
                server=server, timestamp=1000.0 + i * interval, source=source, config=config or {}, **fields
            )
        )
    return window(*built)
