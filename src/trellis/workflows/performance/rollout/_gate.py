"""The rollback gate: turn a stream of window judgments into one action.

Debounced like Argo Rollouts' ``failureLimit`` and Flagger's ``threshold``: one failing window
is noise until ``failures_to_rollback`` windows in a row fail. A failed *critical* check
(error share by default) rolls back at once. Scrape errors are counted apart: they never roll
back, they hold the stage once ``errors_to_hold`` happen in a row (Argo's
``consecutiveErrorLimit``). An inconclusive window neither extends nor breaks a failure streak.

The gate is an immutable value, so a workflow can keep it in its checkpointed state::

    gate = RollbackGate(failures_to_rollback=2)
    decision = gate.observe(judge(canary_windows, baseline_windows))
    gate = decision.gate          # carry forward
    if decision.action is Action.ROLLBACK: ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from trellis.workflows.performance.rollout._judge import Judgment, Verdict


class Action(StrEnum):
    """What the rollout should do after a window."""

    PROCEED = "proceed"
    """The window passed: keep baking; at the end of the bake, go to the next stage."""
    WATCH = "watch"
    """Failing (fewer than k windows in a row) or a scrape error below the limit: keep
    observing, do not promote."""
    HOLD = "hold"
    """Inconclusive data, or too many scrape errors: if the stage ends like this, ask a human."""
    ROLLBACK = "rollback"
    """Restore the original configuration everywhere."""


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The action after one observation, the reason, and the gate state to carry forward."""

    action: Action
    reason: str
    gate: RollbackGate
    verdict: Verdict | None
    """The window's verdict; ``None`` when the observation was a scrape error."""
    judgment: Judgment | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "verdict": None if self.verdict is None else self.verdict.value,
            "consecutive_failures": self.gate.consecutive_failures,
            "consecutive_errors": self.gate.consecutive_errors,
            "judgment": None if self.judgment is None else self.judgment.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class RollbackGate:
    """Counters and limits of the gate (see the module docstring)."""

    failures_to_rollback: int = 2
    """k: consecutive failing windows that trigger a rollback."""
    errors_to_hold: int = 3
    """Consecutive scrape errors after which the stage holds for a human."""
    critical_rolls_back: bool = True
    """Roll back on the first window where a critical check fails."""
    consecutive_failures: int = 0
    consecutive_errors: int = 0

    def __post_init__(self) -> None:
        if self.failures_to_rollback < 1:
            raise ValueError(f"failures_to_rollback must be >= 1, got {self.failures_to_rollback}")
        if self.errors_to_hold < 1:
            raise ValueError(f"errors_to_hold must be >= 1, got {self.errors_to_hold}")

    def observe(self, judgment: Judgment) -> GateDecision:
        """Take one window's judgment."""
        if judgment.verdict is Verdict.PASS:
            gate = replace(self, consecutive_failures=0, consecutive_errors=0)
            return GateDecision(Action.PROCEED, judgment.reason, gate, judgment.verdict, judgment)
        if judgment.verdict is Verdict.INCONCLUSIVE:
            gate = replace(self, consecutive_errors=0)
            return GateDecision(Action.HOLD, judgment.reason, gate, judgment.verdict, judgment)
        failures = self.consecutive_failures + 1
        gate = replace(self, consecutive_failures=failures, consecutive_errors=0)
        if judgment.critical_failure and self.critical_rolls_back:
            reason = f"critical check failed: {judgment.reason}"
            return GateDecision(Action.ROLLBACK, reason, gate, judgment.verdict, judgment)
        if failures >= self.failures_to_rollback:
            limit = self.failures_to_rollback
            reason = f"{failures} consecutive failing windows (limit {limit}): {judgment.reason}"
            return GateDecision(Action.ROLLBACK, reason, gate, judgment.verdict, judgment)
        reason = f"failing window {failures} of {self.failures_to_rollback}: {judgment.reason}"
        return GateDecision(Action.WATCH, reason, gate, judgment.verdict, judgment)

    def observe_error(self, error: BaseException | str) -> GateDecision:
        """Take a scrape (or judgment) error: counted apart, never a failure."""
        errors = self.consecutive_errors + 1
        gate = replace(self, consecutive_errors=errors)
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if errors >= self.errors_to_hold:
            return GateDecision(Action.HOLD, f"{errors} consecutive observation errors: {detail}", gate, None)
        return GateDecision(
            Action.WATCH, f"observation error {errors} of {self.errors_to_hold}: {detail}", gate, None
        )
