"""Derived signals: the named numbers that rules, the health score and canary checks compare.

Every signal is computed from one :class:`~trellis.workflows.performance.collectors.Window`
(window increases and bucket deltas, never lifetime totals) and is ``None`` when the window
lacks what it needs. The names are the vocabulary of the rule table: a rule the team adds can
use any name in :data:`SIGNALS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trellis.workflows.performance.collectors import ServerType, Window

SIGNALS: Mapping[str, str] = {
    "requests": "requests finished in the window (all instances pooled)",
    "request_rate": "requests finished per second, per instance",
    "prompt_tokens_per_s": "prompt tokens processed per second, per instance",
    "generation_tokens_per_s": "tokens generated per second, per instance",
    "running_mean": "mean running requests per scrape",
    "waiting_mean": "mean queued requests per scrape",
    "waiting_max": "largest queue seen in the window",
    "waiting_share": "share of scrapes with a non-empty queue, 0..1",
    "kv_usage_mean": "mean KV-cache use, 0..1 (TGI: reserved batch tokens / max batch total tokens)",
    "kv_usage_max": "largest KV-cache use seen, 0..1",
    "utilization": "running_mean / the concurrency cap (max_num_seqs, max_running_requests)",
    "queue_share": "mean queue time / mean end-to-end latency",
    "preemption_ratio": "preemptions / finished requests (vLLM)",
    "retractions_per_min": "scrapes per minute showing retracted requests (SGLang)",
    "prefix_hit_rate": "prefix-cache hit tokens / queried tokens (SGLang: cached / prompt tokens)",
    "spec_acceptance": "accepted / drafted speculative tokens",
    "ttft_p50": "TTFT median, seconds (TGI: queue p50 + prefill-batch p50, an approximation)",
    "ttft_p95": "TTFT p95, seconds (TGI: queue p95 + prefill-batch p95, an approximation)",
    "itl_p95": "inter-token latency p95, seconds",
    "e2e_p95": "end-to-end latency p95, seconds",
    "e2e_p99": "end-to-end latency p99, seconds",
    "ttft_p95_vs_slo": "ttft_p95 / the TTFT target",
    "itl_p95_vs_slo": "itl_p95 / the ITL target",
    "e2e_p99_vs_slo": "e2e_p99 / the end-to-end target",
    "error_ratio": "failed / finished requests",
    "aborted_ratio": "requests aborted or rejected for load / finished requests",
    "truncated_ratio": "requests stopped by the length limit / finished requests (vLLM)",
}
"""Every signal name with what it measures."""


@dataclass(frozen=True, slots=True)
class Slo:
    """Latency targets, seconds. Defaults are starting points for interactive chat; tune them."""

    ttft_p95: float = 2.0
    """Time to first token, 95th percentile."""
    itl_p95: float = 0.1
    """Inter-token latency, 95th percentile."""
    e2e_p99: float = 60.0
    """End-to-end latency, 99th percentile."""


CAP_KNOBS: Mapping[ServerType, tuple[str, ...]] = {
    ServerType.VLLM: ("max_num_seqs",),
    ServerType.SGLANG: ("max_running_requests",),
    ServerType.TGI: ("max_batch_size", "max_concurrent_requests"),
}
"""Configuration keys that hold each server's concurrency cap, first found wins."""


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def concurrency_cap(window: Window, config: Mapping[str, Any] | None = None) -> float | None:
    """The concurrency cap per instance, from ``config`` or what the server exports."""
    merged: dict[str, Any] = {**window.config, **(config or {})}
    for key in CAP_KNOBS[window.server]:
        value = merged.get(key)
        try:
            if value is not None:
                return float(value)
        except (TypeError, ValueError):
            continue
    if window.max_running_requests is not None:
        return window.max_running_requests / window.instances
    return None


def compute_signals(
    window: Window, *, slo: Slo | None = None, config: Mapping[str, Any] | None = None
) -> dict[str, float | None]:
    """All :data:`SIGNALS` for ``window``.

    Args:
        window: the window (one instance, or a pool from ``combine``).
        slo: latency targets for the ``*_vs_slo`` signals.
        config: the server configuration currently applied, when the caller knows it (the
            concurrency cap is read from it).
    """
    slo = slo or Slo()
    finished = window.increase("requests_finished")
    running = window.gauge("requests_running")
    waiting = window.gauge("requests_waiting")
    kv = window.gauge("kv_cache_usage")
    retracted = window.gauge("retracted_requests")

    ttft_p50 = window.quantile("ttft", 0.5)
    ttft_p95 = window.quantile("ttft", 0.95)
    if window.server is ServerType.TGI and window.distribution("ttft") is None:
        ttft_p50 = _add(window.quantile("queue_time", 0.5), window.quantile("prefill_time", 0.5))
        ttft_p95 = _add(window.quantile("queue_time", 0.95), window.quantile("prefill_time", 0.95))
    itl_p95 = window.quantile("itl", 0.95)
    e2e_p99 = window.quantile("e2e", 0.99)

    prefix_hit = _ratio(window.increase("prefix_cache_hits"), window.increase("prefix_cache_queries"))
    if prefix_hit is None and (gauge := window.gauge("prefix_cache_hit_rate")) is not None:
        prefix_hit = gauge.mean
    spec = _ratio(window.increase("spec_accepted_tokens"), window.increase("spec_draft_tokens"))
    if spec is None and (gauge := window.gauge("spec_accept_rate")) is not None:
        spec = gauge.mean
    retractions = None
    if retracted is not None and window.seconds > 0:
        retractions = retracted.positive_share * retracted.samples / window.instances / (window.seconds / 60)
    truncated = None
    if window.finished_by_reason and finished:
        truncated = window.finished_by_reason.get("length", 0.0) / finished

    return {
        "requests": finished,
        "request_rate": window.rate("requests_finished"),
        "prompt_tokens_per_s": window.rate("prompt_tokens"),
        "generation_tokens_per_s": window.rate("generation_tokens"),
        "running_mean": None if running is None else running.mean,
        "waiting_mean": None if waiting is None else waiting.mean,
        "waiting_max": None if waiting is None else waiting.maximum,
        "waiting_share": None if waiting is None else waiting.positive_share,
        "kv_usage_mean": None if kv is None else kv.mean,
        "kv_usage_max": None if kv is None else kv.maximum,
        "utilization": _ratio(None if running is None else running.mean, concurrency_cap(window, config)),
        "queue_share": _ratio(window.mean("queue_time"), window.mean("e2e")),
        "preemption_ratio": _ratio(window.increase("preemptions"), finished),
        "retractions_per_min": retractions,
        "prefix_hit_rate": prefix_hit,
        "spec_acceptance": spec,
        "ttft_p50": ttft_p50,
        "ttft_p95": ttft_p95,
        "itl_p95": itl_p95,
        "e2e_p95": window.quantile("e2e", 0.95),
        "e2e_p99": e2e_p99,
        "ttft_p95_vs_slo": _ratio(ttft_p95, slo.ttft_p95),
        "itl_p95_vs_slo": _ratio(itl_p95, slo.itl_p95),
        "e2e_p99_vs_slo": _ratio(e2e_p99, slo.e2e_p99),
        "error_ratio": _ratio(window.increase("requests_failed"), finished),
        "aborted_ratio": _ratio(window.increase("requests_aborted"), finished),
        "truncated_ratio": truncated,
    }
