"""Looking agents up by name on the call path, without a restart after a change.

Every ``agent`` node call needs the agent's spec. :class:`AgentDirectory` reads it from the store
and keeps it for ``ttl_seconds``, so a burst of calls costs one read; a change made in this
process (API, CLI in-process) invalidates the entry at once, one made by another process is seen
within the TTL (at once on PostgreSQL, where the change is also announced by ``NOTIFY``).
Parsed specs are kept per ``(name, revision)``, so a spec is validated once per revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from trellis.agents.spec import AgentSpec
from trellis.store import AgentRecord, Store

AGENTS_CHANNEL = "trellis_agents"
"""PostgreSQL notification channel: an agent changed (payload: its name)."""


@dataclass(frozen=True, slots=True)
class Agent:
    """A registered agent as callers use it."""

    name: str
    spec: AgentSpec
    enabled: bool
    healthy: bool
    revision: int


class AgentDirectory:
    """Cached, store-backed lookup of agents by name."""

    def __init__(
        self, store: Store, *, ttl_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, Agent | None]] = {}
        self._specs: dict[tuple[str, int], AgentSpec] = {}

    async def get(self, name: str) -> Agent | None:
        """The agent ``name`` (``None`` if it is not registered), at most ``ttl_seconds`` old."""
        entry = self._entries.get(name)
        now = self._clock()
        if entry is not None and now - entry[0] < self.ttl_seconds:
            return entry[1]
        record = await self.store.get_agent(name)
        agent = None if record is None else self.agent(record)
        self._entries[name] = (now, agent)
        return agent

    def agent(self, record: AgentRecord) -> Agent:
        """An :class:`Agent` from a stored record (its spec parsed once per revision)."""
        key = (record.name, record.revision)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = AgentSpec.model_validate(record.spec)
        return Agent(record.name, spec, record.enabled, record.healthy, record.revision)

    def invalidate(self, name: str | None = None) -> None:
        """Forget ``name`` (every agent when ``None``); the next lookup reads the store."""
        if name is None:
            self._entries.clear()
        else:
            self._entries.pop(name, None)
