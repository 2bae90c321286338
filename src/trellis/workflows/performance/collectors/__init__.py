"""Collectors: read vLLM, TGI and SGLang ``/metrics`` into one model, and window it.

:func:`parse_metrics` (text) and :func:`fetch` (URL) give a :class:`Scrape`; :func:`window`
turns two or more scrapes of one instance into a :class:`Window` of increases, rates and
latency quantiles; :func:`combine` pools the windows of several instances.
"""

from trellis.workflows.performance.collectors._fetch import DEFAULT_TIMEOUT, fetch
from trellis.workflows.performance.collectors._parse import detect_server, parse_metrics
from trellis.workflows.performance.collectors._types import (
    Distribution,
    Histogram,
    Scrape,
    ServerType,
    Summary,
    histogram_quantile,
)
from trellis.workflows.performance.collectors._window import (
    COUNTERS,
    DISTRIBUTIONS,
    GAUGES,
    GaugeStats,
    LatencyMetric,
    Window,
    add_histograms,
    combine,
    window,
)

__all__ = [
    "COUNTERS",
    "DEFAULT_TIMEOUT",
    "DISTRIBUTIONS",
    "GAUGES",
    "Distribution",
    "GaugeStats",
    "Histogram",
    "LatencyMetric",
    "Scrape",
    "ServerType",
    "Summary",
    "Window",
    "add_histograms",
    "combine",
    "detect_server",
    "fetch",
    "histogram_quantile",
    "parse_metrics",
    "window",
]
