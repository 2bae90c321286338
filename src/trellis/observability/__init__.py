"""Observability: Prometheus metrics (:mod:`trellis.observability.metrics`), served at ``/metrics``."""

from trellis.observability.metrics import (
    BREAKER_STATES,
    CONTENT_TYPE,
    SAMPLERS,
    Metrics,
    Sampler,
    agent_metrics,
    breaker_metrics,
)

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "SAMPLERS",
    "Metrics",
    "Sampler",
    "agent_metrics",
    "breaker_metrics",
]
