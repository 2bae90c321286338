"""Prometheus metrics, served as ``GET /metrics`` in the text exposition format.

==========================  =====  ======  ===============================================
metric                      type   labels  value
==========================  =====  ======  ===============================================
``trellis_breaker_state``   gauge  key     circuit state: 0 closed, 1 half_open, 2 open
``trellis_breaker_open``    gauge  key     1 while the circuit is open, else 0
``trellis_agent_healthy``   gauge  agent   1 when the health monitor judges it healthy
``trellis_agent_enabled``   gauge  agent   1 when it is enabled
==========================  =====  ======  ===============================================

``key`` is a breaker key (``agent:<name>``, ``http:<host:port>``); ``agent`` an agent name.

The queue, read from the store as well (the same answer from every process):

=========================================  =====  ================  =================================
metric                                     type   labels            value
=========================================  =====  ================  =================================
``trellis_queue_depth``                    gauge  status, workflow  runs queued, running, waiting,
                                                                    paused
``trellis_queue_oldest_age_seconds``       gauge                    age of the oldest queued run
                                                                    (0 when none is queued)
``trellis_workers_alive``                  gauge                    workers with a live heartbeat
``trellis_leases_expired``                 gauge                    running runs whose lease expired
                                                                    and no worker took over yet
=========================================  =====  ================  =================================

The counters and histograms of the process itself (runs, nodes, retries, lease takeovers, LLM
tokens, open event streams) are listed in :class:`trellis.observability.Instruments`.

Two kinds of source feed a scrape, and both live on a :class:`Metrics`:

* **Samplers** read state shared by every process (breakers, agents, ...) from the store at
  scrape time, so any API process answers for the whole cluster. prometheus_client's
  collectors are synchronous and the store is async, so a scrape first awaits every sampler and
  only then renders what they returned, through a registry made for that scrape.
* **Instruments** of this process (counters, histograms) are registered on
  :attr:`Metrics.registry`, a :class:`~prometheus_client.CollectorRegistry` of its own (never
  the global one, so two engines in one process, as in tests, do not collide).

To add a metric read from the store, write a :data:`Sampler` and add it to :data:`SAMPLERS`
(and to the table above).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from trellis.store import Store

Sampler = Callable[[Store], Awaitable[Iterable[Metric]]]
"""Reads the store at scrape time and returns finished metric families."""

BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""The value of ``trellis_breaker_state`` for each circuit state."""

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The media type of :meth:`Metrics.render`'s output."""


async def breaker_metrics(store: Store) -> list[Metric]:
    """``trellis_breaker_state`` and ``trellis_breaker_open``, one sample per breaker."""
    state = GaugeMetricFamily(
        "trellis_breaker_state", "Circuit breaker state: 0 closed, 1 half_open, 2 open.", labels=["key"]
    )
    opened = GaugeMetricFamily("trellis_breaker_open", "1 while the circuit breaker is open.", labels=["key"])
    for record in await store.list_breakers():
        # An unknown state (a newer release's) is reported as open: the safe reading for alerts.
        state.add_metric([record.key], BREAKER_STATES.get(record.state, 2))
        opened.add_metric([record.key], 0 if record.state in ("closed", "half_open") else 1)
    return [state, opened]


async def agent_metrics(store: Store) -> list[Metric]:
    """``trellis_agent_healthy`` and ``trellis_agent_enabled``, one sample per agent."""
    healthy = GaugeMetricFamily(
        "trellis_agent_healthy", "1 when the agent is judged healthy.", labels=["agent"]
    )
    enabled = GaugeMetricFamily("trellis_agent_enabled", "1 when the agent is enabled.", labels=["agent"])
    for record in await store.list_agents():
        healthy.add_metric([record.name], 1 if record.healthy else 0)
        enabled.add_metric([record.name], 1 if record.enabled else 0)
    return [healthy, enabled]


QUEUE_ALIVE_SECONDS: Final = 30.0
"""A worker whose last heartbeat is older than this is not counted in ``trellis_workers_alive``."""


async def queue_metrics(store: Store) -> list[Metric]:
    """``trellis_queue_depth``, ``trellis_queue_oldest_age_seconds``, workers and expired leases."""
    stats = await store.queue_stats(alive_seconds=QUEUE_ALIVE_SECONDS)
    depth = GaugeMetricFamily(
        "trellis_queue_depth",
        "Runs by status (queued, running, waiting, paused).",
        labels=["status", "workflow"],
    )
    for status, counts in stats["depth"].items():
        for workflow, count in counts["by_workflow"].items():
            depth.add_metric([status, workflow], count)
    oldest = GaugeMetricFamily(
        "trellis_queue_oldest_age_seconds", "Seconds the oldest queued run has waited (0: none queued)."
    )
    oldest.add_metric([], stats["oldest_queued_age_seconds"] or 0.0)
    alive = GaugeMetricFamily("trellis_workers_alive", "Workers with a live heartbeat.")
    alive.add_metric([], sum(1 for w in stats["workers"] if w["alive"]))
    expired = GaugeMetricFamily(
        "trellis_leases_expired", "Running runs whose lease expired and that no worker took over yet."
    )
    expired.add_metric([], sum(1 for lease in stats["leases"] if lease["expired"]))
    return [depth, oldest, alive, expired]


SAMPLERS: Final[tuple[Sampler, ...]] = (breaker_metrics, agent_metrics, queue_metrics)
"""The samplers a :class:`Metrics` uses by default."""


class _Prefetched:
    """A collector that hands out metric families gathered beforehand."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


class Metrics:
    """The metrics of one process: store samplers plus its own instruments.

    Args:
        store: what samplers read at scrape time.
        samplers: defaults to :data:`SAMPLERS`.
        registry: this process's instruments (a new, empty registry by default).

    Example:
        ::

            metrics = Metrics(engine.store)
            body = await metrics.render()  # bytes, media type CONTENT_TYPE

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: Store,
        *,
        samplers: Sequence[Sampler] = SAMPLERS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.samplers = tuple(samplers)
        self.registry = registry if registry is not None else CollectorRegistry()
        """Where this process's own instruments (counters, histograms) are registered: the
        engine's :attr:`Instruments.registry <trellis.observability.Instruments.registry>`
        when served by ``trellis serve``."""

    async def collect(self) -> list[Metric]:
        """Every metric family, the samplers' first (read from the store now)."""
        families: list[Metric] = []
        for sampler in self.samplers:
            families.extend(await sampler(self.store))
        families.extend(self.registry.collect())
        return families

    async def render(self) -> bytes:
        """The Prometheus text exposition of :meth:`collect`."""
        scrape = CollectorRegistry()
        scrape.register(_Prefetched(await self.collect()))
        return generate_latest(scrape)

    def __repr__(self) -> str:
        names = ", ".join(getattr(s, "__name__", repr(s)) for s in self.samplers)
        return f"Metrics(samplers=[{names}])"
