"""Rollout: canary judgment, the rollback gate, and the targets a rollout acts on."""

from trellis.workflows.performance.rollout._gate import Action, GateDecision, RollbackGate
from trellis.workflows.performance.rollout._judge import (
    CanaryPolicy,
    Check,
    CheckResult,
    ErrorRateCheck,
    HealthCheck,
    Judgment,
    LatencyCheck,
    SignalCheck,
    Verdict,
    default_checks,
    judge,
)
from trellis.workflows.performance.rollout._stats import (
    ProportionTest,
    RankTest,
    mann_whitney_grouped,
    mann_whitney_u,
    two_proportion_test,
)
from trellis.workflows.performance.rollout._target import (
    HttpRolloutTarget,
    Instance,
    RolloutTarget,
    Split,
    split_instances,
)

__all__ = [
    "Action",
    "CanaryPolicy",
    "Check",
    "CheckResult",
    "ErrorRateCheck",
    "GateDecision",
    "HealthCheck",
    "HttpRolloutTarget",
    "Instance",
    "Judgment",
    "LatencyCheck",
    "ProportionTest",
    "RankTest",
    "RollbackGate",
    "RolloutTarget",
    "SignalCheck",
    "Split",
    "Verdict",
    "default_checks",
    "judge",
    "mann_whitney_grouped",
    "mann_whitney_u",
    "split_instances",
    "two_proportion_test",
]
