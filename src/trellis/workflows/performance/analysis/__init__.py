"""Analysis: bottleneck rules as data, findings with evidence, and a health score.

Call :func:`analyze` on a :class:`~trellis.workflows.performance.collectors.Window`; extend
:data:`DEFAULT_RULES` with your own :class:`Rule` rows.
"""

from trellis.workflows.performance.analysis._evaluate import Analysis, Evidence, Finding, Skipped, analyze
from trellis.workflows.performance.analysis._health import HealthComponent, HealthScore, health_score
from trellis.workflows.performance.analysis._rules import (
    COMPARATORS,
    DEFAULT_RULES,
    Comparator,
    Condition,
    KnobMove,
    Rule,
    Severity,
    WindowRequirement,
    validate_rules,
)
from trellis.workflows.performance.analysis._signals import (
    CAP_KNOBS,
    SIGNALS,
    Slo,
    compute_signals,
    concurrency_cap,
)

__all__ = [
    "CAP_KNOBS",
    "COMPARATORS",
    "DEFAULT_RULES",
    "SIGNALS",
    "Analysis",
    "Comparator",
    "Condition",
    "Evidence",
    "Finding",
    "HealthComponent",
    "HealthScore",
    "KnobMove",
    "Rule",
    "Severity",
    "Skipped",
    "Slo",
    "WindowRequirement",
    "analyze",
    "compute_signals",
    "concurrency_cap",
    "health_score",
    "validate_rules",
]
