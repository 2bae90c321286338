"""Observability: Prometheus metrics, run analytics, node logs and retention.

* :mod:`trellis.observability.metrics` — ``/metrics``: store samplers plus this process's
  :class:`Instruments` (fed by the runtime through a :class:`RunObserver`).
* :func:`summarize` — ``GET /v1/metrics/summary``: success rates, percentiles, token usage.
* :func:`configure_logging` — structlog JSON logs carrying run id, node and attempt.
* :func:`collect_garbage` — ``trellis gc``: prune finished runs past a horizon.
"""

from trellis.observability._instruments import Instruments, RunObserver, node_label
from trellis.observability._logging import configure_logging
from trellis.observability._retention import GcReport, RetentionPolicy, collect_garbage, parse_duration
from trellis.observability._summary import summarize
from trellis.observability.metrics import (
    BREAKER_STATES,
    CONTENT_TYPE,
    SAMPLERS,
    Metrics,
    Sampler,
    agent_metrics,
    breaker_metrics,
    queue_metrics,
)

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "SAMPLERS",
    "GcReport",
    "Instruments",
    "Metrics",
    "RetentionPolicy",
    "RunObserver",
    "Sampler",
    "agent_metrics",
    "breaker_metrics",
    "collect_garbage",
    "configure_logging",
    "node_label",
    "parse_duration",
    "queue_metrics",
    "summarize",
]
