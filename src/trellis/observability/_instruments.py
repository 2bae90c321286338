"""This process's own Prometheus instruments: counters and histograms fed by the runtime.

Each process (``trellis serve``, every ``trellis worker``) counts what *it* did — the runs it
executed, the nodes they ran — so Prometheus sums the series of all processes. Whatever is
shared (queue depth, breakers) is read from the store at scrape time instead (see
:mod:`trellis.observability.metrics`).

The runtime feeds the counters from the events it persisted (:class:`RunObserver`), so a metric
never counts something the run's event log does not show. Labels are bounded: a workflow name,
a node id (``[index]`` of a map item dropped), a status, a model name — never a run id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trellis.store import EventRecord

log = logging.getLogger(__name__)

RUN_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
"""Run durations span sub-second graphs to hours-long ones (approval waits included)."""
NODE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FINISHED_EVENTS: Final = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled"}
ATTEMPT_EVENTS: Final = {"node.succeeded": "succeeded", "node.failed": "failed", "node.retrying": "retrying"}

_MAP_INDEX = re.compile(r"\[\d+\]")


def node_label(node: str | None) -> str:
    """A node key as a label: ``classify[3]`` (one map item) → ``classify``, bounded by the graph."""
    return _MAP_INDEX.sub("", node or "")


class Instruments:
    """The counters and histograms of one process, on a registry of their own.

    ==================================  =========  =====================================  =========
    metric                              type       labels                                 unit
    ==================================  =========  =====================================  =========
    ``trellis_runs_started_total``      counter    workflow
    ``trellis_runs_finished_total``     counter    workflow, status
    ``trellis_run_duration_seconds``    histogram  workflow, status                       seconds
    ``trellis_node_duration_seconds``   histogram  workflow, node, status                 seconds
    ``trellis_node_retries_total``      counter    workflow, node
    ``trellis_lease_expirations_total`` counter    workflow
    ``trellis_llm_tokens_total``        counter    workflow, node, model, kind
    ``trellis_event_stream_subscribers`` gauge     (none)
    ==================================  =========  =====================================  =========

    ``status`` of a node is the attempt's outcome: ``succeeded``, ``failed`` or ``retrying`` (it
    failed and another attempt follows). ``kind`` of tokens is ``prompt`` or ``completion``.
    A run's duration is from its first start to its end, parked time included.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "trellis_runs_started", "Runs that started executing.", ["workflow"], registry=r
        )
        self.runs_finished = Counter(
            "trellis_runs_finished", "Runs that reached a final status.", ["workflow", "status"], registry=r
        )
        self.run_duration = Histogram(
            "trellis_run_duration_seconds",
            "Seconds from a run's start to its end (parked time included).",
            ["workflow", "status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.node_duration = Histogram(
            "trellis_node_duration_seconds",
            "Seconds one node attempt took, by its outcome.",
            ["workflow", "node", "status"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.node_retries = Counter(
            "trellis_node_retries",
            "Node attempts that failed and were retried.",
            ["workflow", "node"],
            registry=r,
        )
        self.lease_expirations = Counter(
            "trellis_lease_expirations",
            "Runs this process took over because their worker's lease had expired.",
            ["workflow"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "trellis_llm_tokens",
            "Tokens used by llm nodes (kind: prompt or completion).",
            ["workflow", "node", "model", "kind"],
            registry=r,
        )
        self.stream_subscribers = Gauge(
            "trellis_event_stream_subscribers",
            "Open SSE and WebSocket event streams served by this process.",
            registry=r,
        )

    def observer(self, workflow: str, started_at: datetime | None = None) -> RunObserver:
        """What the runtime hands each execution's persisted events to."""
        return RunObserver(self, workflow, started_at)

    def __repr__(self) -> str:
        return f"Instruments(families={len(list(self.registry.collect()))})"


class RunObserver:
    """Turns one run's persisted events into metric updates (never raises)."""

    def __init__(self, instruments: Instruments, workflow: str, started_at: datetime | None) -> None:
        self.instruments = instruments
        self.workflow = workflow
        self.started_at = started_at

    def __call__(self, records: Iterable[EventRecord]) -> None:
        for record in records:
            try:
                self._observe(record)
            except Exception:  # a metric must never break a run
                log.exception("metrics: could not observe %s of run %s", record.type, record.run_id)

    def _observe(self, record: EventRecord) -> None:
        m, wf, data = self.instruments, self.workflow, record.data or {}
        if record.type == "run.started":
            self.started_at = record.ts
            m.runs_started.labels(wf).inc()
        elif record.type == "run.resumed" and data.get("from") == "lease_expired":
            m.lease_expirations.labels(wf).inc()
        elif record.type in FINISHED_EVENTS:
            status = FINISHED_EVENTS[record.type]
            m.runs_finished.labels(wf, status).inc()
            if self.started_at is not None:
                seconds = (record.ts - self.started_at).total_seconds()
                m.run_duration.labels(wf, status).observe(max(seconds, 0.0))
        elif record.type in ATTEMPT_EVENTS:
            node = node_label(record.node)
            if isinstance(data.get("duration_ms"), int | float):
                m.node_duration.labels(wf, node, ATTEMPT_EVENTS[record.type]).observe(
                    data["duration_ms"] / 1000
                )
            if record.type == "node.retrying":
                m.node_retries.labels(wf, node).inc()
            usage = data.get("usage")
            if isinstance(usage, Mapping):
                self._tokens(node, usage)

    def _tokens(self, node: str, usage: Mapping[str, Any]) -> None:
        model = str(usage.get("model") or "unknown")
        for kind in ("prompt", "completion"):
            count = usage.get(f"{kind}_tokens")
            if isinstance(count, int) and count > 0:
                self.instruments.llm_tokens.labels(self.workflow, node, model, kind).inc(count)

    def __repr__(self) -> str:
        return f"RunObserver(workflow={self.workflow!r})"
