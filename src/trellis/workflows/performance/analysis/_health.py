"""A 0-1 health score per window, with every component explained.

Weights and targets follow ``research/inference_metrics.md`` section 5 (rescaled from 0-100 to
0-1): latency against the targets (TTFT p95 0.25, ITL p95 0.20, e2e p99 0.10), errors 0.20,
saturation (queue share 0.10, preemption ratio 0.10, KV usage above 95 % 0.05). A component
scores 1 at or below its target and falls linearly to 0 at ``zero_at`` (twice the target
unless stated). A component whose signal is missing is left out and the remaining weights are
renormalised, so a TGI window (no TTFT, no preemptions) is scored on what it does export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trellis.workflows.performance.analysis._signals import Slo


@dataclass(frozen=True, slots=True)
class HealthComponent:
    """One term of the score."""

    name: str
    signal: str
    weight: float
    """Nominal weight, before renormalisation over the available components."""
    target: float
    zero_at: float
    observed: float | None
    score: float | None
    """0..1; ``None`` when the signal is missing (the component is then left out)."""

    def explain(self) -> str:
        if self.observed is None or self.score is None:
            return f"{self.name}: no data ({self.signal} missing), left out"
        return (
            f"{self.name}: {self.signal}={self.observed:.4g} vs target {self.target:g} "
            f"(0 at {self.zero_at:g}) -> {self.score:.2f} x weight {self.weight:.2f}"
        )


@dataclass(frozen=True, slots=True)
class HealthScore:
    """The weighted score, 0 (bad) .. 1 (all targets met); ``None`` when nothing was measurable."""

    value: float | None
    components: tuple[HealthComponent, ...]

    def explain(self) -> list[str]:
        head = "health: no data" if self.value is None else f"health: {self.value:.3f}"
        return [head, *(c.explain() for c in self.components)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "components": [
                {
                    "name": c.name,
                    "signal": c.signal,
                    "weight": c.weight,
                    "target": c.target,
                    "zero_at": c.zero_at,
                    "observed": c.observed,
                    "score": c.score,
                }
                for c in self.components
            ],
        }


def _linear(observed: float, target: float, zero_at: float) -> float:
    if observed <= target:
        return 1.0
    if observed >= zero_at:
        return 0.0
    return (zero_at - observed) / (zero_at - target)


def health_score(
    signals: Mapping[str, float | None],
    *,
    slo: Slo | None = None,
    error_target: float = 0.01,
    queue_share_target: float = 0.2,
    preemption_target: float = 0.01,
) -> HealthScore:
    """Score a window's signals (from :func:`compute_signals`).

    Args:
        signals: the window's signals.
        slo: latency targets.
        error_target: failed share of requests that still scores full marks.
        queue_share_target: share of latency spent queueing that still scores full marks.
        preemption_target: preemptions per finished request that still score full marks.
    """
    slo = slo or Slo()
    terms = (
        ("ttft", "ttft_p95", 0.25, slo.ttft_p95, 2 * slo.ttft_p95),
        ("itl", "itl_p95", 0.20, slo.itl_p95, 2 * slo.itl_p95),
        ("e2e", "e2e_p99", 0.10, slo.e2e_p99, 2 * slo.e2e_p99),
        ("errors", "error_ratio", 0.20, error_target, 2 * error_target),
        ("queueing", "queue_share", 0.10, queue_share_target, 2 * queue_share_target),
        ("preemption", "preemption_ratio", 0.10, preemption_target, 2 * preemption_target),
        ("kv_headroom", "kv_usage_max", 0.05, 0.95, 1.0),
    )
    components: list[HealthComponent] = []
    for name, signal, weight, target, zero_at in terms:
        observed = signals.get(signal)
        score = None if observed is None else _linear(observed, target, zero_at)
        components.append(HealthComponent(name, signal, weight, target, zero_at, observed, score))
    scored = [c for c in components if c.score is not None]
    if not scored:
        return HealthScore(value=None, components=tuple(components))
    total_weight = sum(c.weight for c in scored)
    value = sum(c.weight * (c.score or 0.0) for c in scored) / total_weight
    return HealthScore(value=value, components=tuple(components))
