"""The performance agent's library: tune vLLM / TGI / SGLang deployments safely.

The pieces, in the order a rollout uses them:

* :mod:`.collectors`: ``fetch`` / ``parse_metrics`` a ``/metrics`` page into a ``Scrape``;
  ``window`` two or more scrapes into rates and latency quantiles; ``combine`` instances.
* :mod:`.analysis`: ``analyze`` a window against the bottleneck rule table
  (``DEFAULT_RULES``, data the team extends) into findings with evidence and a health score.
* :mod:`.optimization`: ``plan`` findings into ordered flag changes per server type.
* :mod:`.rollout`: ``judge`` canary against baseline windows, ``RollbackGate`` for k
  consecutive failures, and the ``RolloutTarget`` protocol with ``HttpRolloutTarget``.
* :mod:`.simulator`: a *simulated* fleet (loopback HTTP) for demos and tests.
* :mod:`.testing`: builders of crafted windows for testing new rules and checks.

Nothing here knows about workflows, the store or the API; the ``performance-agent`` workflow
(:data:`WORKFLOW_FILE`) wires these functions in as tools (:mod:`.tools`, registered on import).
"""

from pathlib import Path

from trellis.workflows.performance.analysis import DEFAULT_RULES, Analysis, Finding, Rule, Slo, analyze
from trellis.workflows.performance.collectors import (
    Scrape,
    ServerType,
    Window,
    combine,
    fetch,
    parse_metrics,
    window,
)
from trellis.workflows.performance.errors import (
    AnalysisError,
    MetricsFormatError,
    RolloutTargetError,
    ScrapeError,
)
from trellis.workflows.performance.optimization import Plan, Recommendation, plan
from trellis.workflows.performance.rollout import (
    Action,
    CanaryPolicy,
    HttpRolloutTarget,
    Instance,
    Judgment,
    RollbackGate,
    RolloutTarget,
    Verdict,
    judge,
)

WORKFLOW_FILE = Path(__file__).with_name("performance_agent.yaml")
"""The bundled ``performance-agent`` definition (DSL YAML); its tools are in :mod:`.tools`."""

__all__ = [
    "DEFAULT_RULES",
    "WORKFLOW_FILE",
    "Action",
    "Analysis",
    "AnalysisError",
    "CanaryPolicy",
    "Finding",
    "HttpRolloutTarget",
    "Instance",
    "Judgment",
    "MetricsFormatError",
    "Plan",
    "Recommendation",
    "RollbackGate",
    "RolloutTarget",
    "RolloutTargetError",
    "Rule",
    "Scrape",
    "ScrapeError",
    "ServerType",
    "Slo",
    "Verdict",
    "Window",
    "analyze",
    "combine",
    "fetch",
    "judge",
    "parse_metrics",
    "plan",
    "window",
]
