"""The agent registry: HTTP services that ``agent`` nodes call by name.

Agents are registered at runtime (``POST /v1/agents``, ``trellis agents register``) and stored
with their policies (:class:`AgentSpec`); calls look them up through an :class:`AgentDirectory`,
and a :class:`HealthMonitor` in each serving process keeps their health current.
"""

from trellis.agents.directory import AGENTS_CHANNEL, Agent, AgentDirectory
from trellis.agents.health import HealthMonitor, judge, percentile, summarize
from trellis.agents.spec import READ_ONLY, AgentSpec, AuthSpec, HealthPolicy, agent_fields, check_name

__all__ = [
    "AGENTS_CHANNEL",
    "READ_ONLY",
    "Agent",
    "AgentDirectory",
    "AgentSpec",
    "AuthSpec",
    "HealthMonitor",
    "HealthPolicy",
    "agent_fields",
    "check_name",
    "judge",
    "percentile",
    "summarize",
]
