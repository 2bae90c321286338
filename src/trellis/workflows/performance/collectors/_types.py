"""Value types of the collectors: distributions and one normalised scrape.

A :class:`Scrape` is what one ``/metrics`` read of one instance says, translated from the
server's own metric names into one vocabulary (``requests_waiting``, ``ttft``, ...). Counters
and distributions are cumulative, exactly as exported: on their own they describe the process
lifetime. Use :func:`~trellis.workflows.performance.collectors.window` on two or more scrapes to
get rates and latency quantiles for a time window.

A field is ``None`` when the capture has no such family (an older server, a metric that needs a
flag, a truncated capture): absence is information, never a crash and never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


class ServerType(StrEnum):
    """The inference servers whose ``/metrics`` format is understood."""

    VLLM = "vllm"
    TGI = "tgi"
    SGLANG = "sglang"


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """The ``q``-quantile of cumulative ``buckets``, interpolated as Prometheus does.

    Prometheus' ``histogram_quantile`` assumes observations spread evenly inside a bucket: it
    finds the bucket holding rank ``q * total`` and interpolates linearly between the bucket's
    lower and upper bound (the lowest bucket starts at 0 when its upper bound is positive). A
    rank that falls into the ``+Inf`` bucket returns the largest finite upper bound.

    Args:
        q: the quantile, ``0 <= q <= 1``.
        buckets: ``(upper_bound, cumulative_count)`` pairs in ascending bound order, the last
            with bound ``+Inf``.

    Returns:
        The estimate, or ``None`` when the buckets hold no observation (or no ``+Inf`` bucket).

    Raises:
        ValueError: ``q`` is outside ``[0, 1]``.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    # Cumulative counts can dip by rounding or a scrape that raced an observation; Prometheus
    # repairs that by making them monotonic before interpolating, and so do we.
    counts: list[float] = []
    running = 0.0
    for _, count in buckets:
        running = max(running, count)
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, cumulative in enumerate(counts) if cumulative >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper = buckets[index][0]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = buckets[index - 1][0], counts[index - 1]
    inside = counts[index] - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative Prometheus histogram (all matching series summed bucket by bucket)."""

    buckets: tuple[tuple[float, float], ...]
    """``(upper_bound, cumulative_count)`` in ascending bound order, ending with ``+Inf``."""
    count: float
    """Number of observations (``_count``)."""
    sum: float
    """Sum of the observations (``_sum``), in the metric's unit (seconds for latencies)."""

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile estimate (see :func:`histogram_quantile`); ``None`` when empty."""
        return histogram_quantile(q, self.buckets)

    @property
    def mean(self) -> float | None:
        """``sum / count``; ``None`` without observations."""
        return self.sum / self.count if self.count > 0 else None

    def per_bucket(self) -> tuple[tuple[float, float], ...]:
        """Non-cumulative ``(upper_bound, count_in_bucket)`` pairs (negative dips clamped to 0)."""
        result: list[tuple[float, float]] = []
        previous = 0.0
        for bound, cumulative in self.buckets:
            result.append((bound, max(cumulative - previous, 0.0)))
            previous = max(previous, cumulative)
        return tuple(result)

    def __repr__(self) -> str:
        return f"Histogram(count={self.count:g}, sum={self.sum:g}, buckets={len(self.buckets)})"


@dataclass(frozen=True, slots=True)
class Summary:
    """A Prometheus summary: exporter-computed quantiles plus ``_sum`` and ``_count``.

    The quantiles are computed by the exporter over its own horizon and cannot be differenced
    between scrapes; only ``sum`` and ``count`` give windowed figures (a mean).
    """

    quantiles: tuple[tuple[float, float], ...]
    """``(quantile, value)`` pairs as exported, ascending."""
    count: float
    sum: float

    def quantile(self, q: float) -> float | None:
        """The exported value for exactly ``q``, or ``None`` when the exporter does not export it."""
        return next((value for quantile, value in self.quantiles if math.isclose(quantile, q)), None)

    @property
    def mean(self) -> float | None:
        """``sum / count``; ``None`` without observations."""
        return self.sum / self.count if self.count > 0 else None


Distribution = Histogram | Summary
"""A latency or size distribution as exported."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """One normalised ``/metrics`` read of one instance.

    Gauges are instantaneous; counters and distributions are cumulative since the server
    process started. Series that differ only by labels (data-parallel engines, ranks) are
    summed, except ``kv_cache_usage`` which is their mean.
    """

    server: ServerType
    timestamp: float
    """When the scrape was taken, Unix seconds."""
    source: str = "<text>"
    """URL or file the text came from."""
    model: str | None = None
    """``model_name`` (or the early SGLang ``name``) label; TGI exports none."""

    # Gauges
    requests_running: float | None = None
    """Requests in the running batch (vLLM ``num_requests_running``, TGI ``batch_current_size``,
    SGLang ``num_running_reqs``)."""
    requests_waiting: float | None = None
    """Requests queued (vLLM ``num_requests_waiting``, TGI ``queue_size``, SGLang ``num_queue_reqs``)."""
    kv_cache_usage: float | None = None
    """KV-cache use, 0..1 (vLLM ``kv_cache_usage_perc`` or its deprecated ``gpu_cache_usage_perc``,
    SGLang ``token_usage``, TGI ``batch_current_max_tokens / batch_max_total_tokens``)."""
    retracted_requests: float | None = None
    """SGLang ``num_retracted_reqs`` (its preemption signal, a gauge)."""
    max_running_requests: float | None = None
    """The concurrency cap when the server exports it (early SGLang ``max_running_requests``)."""

    # Counters (cumulative)
    preemptions: float | None = None
    """vLLM ``num_preemptions_total``; TGI does not preempt."""
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    prefix_cache_queries: float | None = None
    """Tokens looked up in the prefix cache (SGLang: prompt tokens, paired with cached tokens)."""
    prefix_cache_hits: float | None = None
    """Tokens found in the prefix cache (SGLang ``cached_tokens_total``)."""
    requests_finished: float | None = None
    """Requests that ended, successfully or not."""
    requests_failed: float | None = None
    """Requests that ended in an error (TGI ``request_failure``, vLLM ``finished_reason=abort``,
    SGLang ``num_aborted_requests``)."""
    requests_aborted: float | None = None
    """Requests rejected or aborted for load (TGI ``err=overloaded``, vLLM/SGLang aborts)."""
    finished_by_reason: Mapping[str, float] = field(default_factory=_empty)
    """vLLM ``request_success_total`` by ``finished_reason`` (``stop``, ``length``, ``abort``)."""
    failed_by_reason: Mapping[str, float] = field(default_factory=_empty)
    """TGI ``request_failure`` by ``err``."""
    spec_draft_tokens: float | None = None
    spec_accepted_tokens: float | None = None

    # Distributions (cumulative)
    ttft: Distribution | None = None
    """Time to first token, seconds. TGI exports none."""
    itl: Distribution | None = None
    """Inter-token latency, seconds (TGI: per-request mean time per token)."""
    e2e: Distribution | None = None
    """End-to-end request latency, seconds."""
    queue_time: Distribution | None = None
    """Time spent waiting before admission, seconds."""
    prefill_time: Distribution | None = None
    """Prefill time, seconds (TGI: per prefill *batch* forward, not per request)."""

    # Exporter-computed gauges kept for reference
    prefix_cache_hit_rate: float | None = None
    """SGLang ``cache_hit_rate`` gauge (the exporter's own estimate)."""
    spec_accept_rate: float | None = None
    """SGLang ``spec_accept_rate`` gauge."""
    generation_throughput: float | None = None
    """SGLang ``gen_throughput`` gauge, tokens/s."""

    config: Mapping[str, str] = field(default_factory=_empty)
    """Static configuration the server exports (vLLM ``cache_config_info`` labels, early SGLang
    limit gauges), keyed by knob name."""
    families: frozenset[str] = frozenset()
    """Every metric family name in the capture (as ``prometheus_client`` names them)."""

    def __repr__(self) -> str:
        return (
            f"Scrape(server={self.server.value!r}, source={self.source!r}, timestamp={self.timestamp:.3f}, "
            f"running={self.requests_running}, waiting={self.requests_waiting}, kv={self.kv_cache_usage})"
        )
