"""Agent health: probes and real calls give each agent a rolling success rate and latency.

:class:`HealthMonitor` runs in every ``serve`` and ``worker`` process:

* calls made by ``agent`` nodes are :meth:`~HealthMonitor.observe`\\ d in memory and written to
  ``agent_samples`` in batches (one write per tick, not one per call);
* each agent's ``health_path`` is probed every ``probe_interval_seconds`` by exactly one of the
  processes sharing the store (the probe is claimed with a conditional update);
* after each tick, agents with new samples are judged (:func:`judge`): an agent whose success
  rate over the window falls below its threshold becomes unhealthy (``agent.unhealthy``), and an
  unhealthy one recovers (``agent.healthy``) after ``recover_after`` consecutive successful
  probes. Only samples taken since the last transition count, so a recovered agent is not
  judged again on the failures that made it unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from trellis.agents.directory import Agent, AgentDirectory
from trellis.agents.spec import HealthPolicy
from trellis.store import AgentRecord, AgentSample, Store

log = logging.getLogger(__name__)

MAX_BUFFERED = 10_000
"""Call outcomes kept in memory between two flushes (older ones are dropped first)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by linear interpolation; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[AgentSample]) -> dict[str, Any]:
    """Counts, success rate and p50/p95 latency of ``samples``."""
    latencies = [s.latency_ms for s in samples if s.ok and s.latency_ms is not None]
    ok = sum(1 for s in samples if s.ok)
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return {
        "samples": len(samples),
        "successes": ok,
        "failures": len(samples) - ok,
        "success_rate": None if not samples else round(ok / len(samples), 4),
        "latency_ms": {
            "p50": None if p50 is None else round(p50, 3),
            "p95": None if p95 is None else round(p95, 3),
        },
        "probes": sum(1 for s in samples if s.source == "probe"),
        "calls": sum(1 for s in samples if s.source == "call"),
    }


def judge(
    healthy: bool, policy: HealthPolicy, samples: Sequence[AgentSample], *, probed: bool
) -> tuple[bool, str] | None:
    """The agent's new health and why, or ``None`` when it stays as it is.

    Args:
        healthy: its current health.
        samples: outcomes since its last transition, within the policy's window, oldest first.
        probed: whether it has a health path (an unprobed agent recovers on its calls).
    """
    if healthy:
        if len(samples) < policy.min_samples:
            return None
        rate = sum(1 for s in samples if s.ok) / len(samples)
        if rate >= policy.threshold:
            return None
        return False, f"success rate {rate:.0%} over {len(samples)} outcomes is below {policy.threshold:.0%}"
    deciding = [s for s in samples if s.source == "probe"] if probed else list(samples)
    last = deciding[-policy.recover_after :]
    if len(last) == policy.recover_after and all(s.ok for s in last):
        what = "probes" if probed else "calls"
        return True, f"{policy.recover_after} consecutive successful {what}"
    return None


class HealthMonitor:
    """Probes agents, records call outcomes and judges health, for one process.

    Args:
        store: where samples and health live.
        directory: the agents (invalidated when one's health changes).
        http: the HTTP client probes use.
        tick_seconds: how often samples are flushed, probes considered and agents judged.
        retention_seconds: samples older than this are deleted.
    """

    def __init__(
        self,
        store: Store,
        directory: AgentDirectory,
        http: Callable[[], httpx.AsyncClient],
        *,
        tick_seconds: float = 1.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self.store = store
        self.directory = directory
        self.http = http
        self.tick_seconds = tick_seconds
        self.retention_seconds = retention_seconds
        self._buffer: deque[AgentSample] = deque(maxlen=MAX_BUFFERED)
        self._next_probe: dict[str, float] = {}
        self._pruned_at = 0.0

    def observe(self, agent: str, *, ok: bool, latency_ms: float | None, error: str | None = None) -> None:
        """Remember the outcome of a real call (written at the next tick)."""
        self._buffer.append(AgentSample(agent, datetime.now(UTC), "call", ok, latency_ms, error))

    async def run(self) -> None:
        """Tick until cancelled; a failing tick is logged and the next one tries again."""
        try:
            while True:
                try:
                    await self.tick()
                except Exception:
                    log.exception("agent health tick failed")
                await asyncio.sleep(self.tick_seconds)
        finally:
            await asyncio.shield(self.flush())

    async def tick(self) -> None:
        """Probe the agents that are due, write buffered outcomes, judge the agents touched."""
        records = await self.store.list_agents()
        agents = [self.directory.agent(r) for r in records]
        due = [a for a in agents if a.enabled and a.spec.health_path and self._probe_due(a)]
        claimed = [a for a in due if await self._claim(a)]
        probes = await asyncio.gather(*(self._probe(a) for a in claimed))
        touched = {s.agent for s in self._buffer} | {a.name for a in claimed}
        await self.flush(probes)
        for record in records:
            if record.name in touched:
                await self.judge(record)
        if time.monotonic() - self._pruned_at > 60:
            self._pruned_at = time.monotonic()
            await self.store.prune_agent_samples(
                before=datetime.now(UTC) - timedelta(seconds=self.retention_seconds)
            )

    async def flush(self, extra: Sequence[AgentSample] = ()) -> None:
        """Write buffered call outcomes (and ``extra`` samples) in one transaction."""
        batch = [*extra]
        while self._buffer:
            batch.append(self._buffer.popleft())
        if batch:
            await self.store.add_agent_samples(batch)

    def _probe_due(self, agent: Agent) -> bool:
        return time.monotonic() >= self._next_probe.get(agent.name, 0.0)

    async def _claim(self, agent: Agent) -> bool:
        interval = agent.spec.health.probe_interval_seconds
        self._next_probe[agent.name] = time.monotonic() + interval
        # The claim allows for clock skew between processes: a probe is due a little early.
        return await self.store.claim_probe(agent.name, interval_seconds=interval * 0.9)

    async def _probe(self, agent: Agent) -> AgentSample:
        spec = agent.spec
        headers = {}
        started = time.perf_counter()
        try:
            if spec.auth is not None:
                headers[spec.auth.header] = spec.auth.value(agent.name)
            response = await self.http().get(
                spec.url(spec.health_path), headers=headers, timeout=spec.health.probe_timeout_seconds
            )
            latency = (time.perf_counter() - started) * 1000
            ok = response.status_code < 400
            error = None if ok else f"HTTP {response.status_code}"
        except Exception as exc:  # any failure to probe is an unhealthy outcome, with its reason
            latency, ok, error = None, False, f"{type(exc).__name__}: {exc}"[:200]
        return AgentSample(agent.name, datetime.now(UTC), "probe", ok, latency, error)

    async def judge(self, record: AgentRecord) -> bool | None:
        """Judge one agent now (as of ``record``, read this tick; the transition itself is a
        compare-and-set); returns its new health when it changed."""
        agent = self.directory.agent(record)
        policy = agent.spec.health
        since = datetime.now(UTC) - timedelta(seconds=policy.window_seconds)
        if record.health_changed_at is not None:
            since = max(since, record.health_changed_at)
        samples = await self.store.agent_samples(agent.name, since=since)
        verdict = judge(record.healthy, policy, samples, probed=agent.spec.health_path is not None)
        if verdict is None:
            return None
        healthy, reason = verdict
        data = {"agent": agent.name, "reason": reason, **summarize(samples)}
        if await self.store.set_agent_health(agent.name, healthy, data):
            self.directory.invalidate(agent.name)
            log.warning("agent %s is now %s: %s", agent.name, "healthy" if healthy else "unhealthy", reason)
            return healthy
        return None

    async def report(self, agent: Agent, healthy: bool, changed_at: datetime | None) -> dict[str, Any]:
        """``GET /v1/agents/{name}/health``: health, window stats, and the last probe."""
        policy = agent.spec.health
        since = datetime.now(UTC) - timedelta(seconds=policy.window_seconds)
        samples = await self.store.agent_samples(agent.name, since=since)
        probes = [s for s in samples if s.source == "probe"]
        last = probes[-1] if probes else None
        return {
            "agent": agent.name,
            "enabled": agent.enabled,
            "healthy": healthy,
            "changed_at": None if changed_at is None else changed_at.isoformat(),
            "window_seconds": policy.window_seconds,
            "threshold": policy.threshold,
            **summarize(samples),
            "last_probe": None
            if last is None
            else {
                "at": last.ts.isoformat(),
                "ok": last.ok,
                "latency_ms": last.latency_ms,
                "error": last.error,
            },
        }
