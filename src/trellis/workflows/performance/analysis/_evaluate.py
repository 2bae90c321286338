"""Evaluating the rule table over a window: findings with their evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trellis.workflows.performance.analysis._health import HealthScore, health_score
from trellis.workflows.performance.analysis._rules import (
    DEFAULT_RULES,
    Comparator,
    KnobMove,
    Rule,
    Severity,
    validate_rules,
)
from trellis.workflows.performance.analysis._signals import Slo, compute_signals
from trellis.workflows.performance.collectors import ServerType, Window


@dataclass(frozen=True, slots=True)
class Evidence:
    """One condition of a rule as observed: what was compared, against what, over which window."""

    metric: str
    observed: float
    comparator: Comparator
    threshold: float
    held: bool
    window: Mapping[str, object]
    """``{start, end, seconds, scrapes, instances}`` of the window it was observed over."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "observed": self.observed,
            "comparator": self.comparator,
            "threshold": self.threshold,
            "held": self.held,
            "window": dict(self.window),
        }

    def __str__(self) -> str:
        return f"{self.metric}={self.observed:.4g} {self.comparator} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule whose conditions all held."""

    rule_id: str
    title: str
    text: str
    severity: Severity
    evidence: tuple[Evidence, ...]
    knobs: tuple[KnobMove, ...]
    advice: str
    effect: str
    risk: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "title": self.title,
            "text": self.text,
            "severity": self.severity.value,
            "evidence": [e.to_dict() for e in self.evidence],
            "knobs": [{"knob": k.knob, "direction": k.direction, "value": k.value} for k in self.knobs],
            "advice": self.advice,
            "effect": self.effect,
            "risk": self.risk,
        }

    def __repr__(self) -> str:
        return f"Finding(rule_id={self.rule_id!r}, evidence=[{', '.join(map(str, self.evidence))}])"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A rule that could not be evaluated, and why (missing signal, window too short)."""

    rule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the analysis of one window says."""

    server: ServerType
    window: Mapping[str, object]
    signals: Mapping[str, float | None]
    findings: tuple[Finding, ...]
    """Most severe first, then in table order."""
    skipped: tuple[Skipped, ...]
    health: HealthScore

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.value,
            "window": dict(self.window),
            "signals": dict(self.signals),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [{"rule": s.rule_id, "reason": s.reason} for s in self.skipped],
            "health": self.health.to_dict(),
        }


class _Figures(dict[str, float]):
    """Signals for ``str.format``: a missing one formats as ``nan`` rather than raising."""

    def __missing__(self, key: str) -> float:
        return math.nan


def _evaluate(rule: Rule, window: Window, signals: Mapping[str, float | None]) -> Finding | Skipped | None:
    need = rule.window
    if window.scrapes < need.min_scrapes * window.instances:
        return Skipped(rule.id, f"needs {need.min_scrapes} scrapes per instance, window has {window.scrapes}")
    if window.seconds < need.min_seconds:
        return Skipped(rule.id, f"needs a window of {need.min_seconds:g} s, got {window.seconds:.1f} s")
    requests = signals.get("requests")
    if need.min_requests > 0 and (requests is None or requests < need.min_requests):
        return Skipped(rule.id, f"needs {need.min_requests:g} finished requests, window has {requests}")
    described = window.describe()
    evidence: list[Evidence] = []
    for condition in rule.when:
        value = signals.get(condition.signal)
        if value is None or math.isnan(value):
            if condition.optional:
                continue
            return Skipped(rule.id, f"signal {condition.signal!r} is not available for this window")
        held = condition.holds(value, window.server)
        evidence.append(
            Evidence(
                metric=condition.signal,
                observed=value,
                comparator=condition.comparator,
                threshold=condition.threshold_for(window.server),
                held=held,
                window=described,
            )
        )
        if not held:
            return None
    figures = _Figures({k: v for k, v in signals.items() if v is not None})
    return Finding(
        rule_id=rule.id,
        title=rule.title,
        text=rule.finding.format_map(figures),
        severity=rule.severity,
        evidence=tuple(evidence),
        knobs=rule.knobs.get(window.server, ()),
        advice=rule.advice,
        effect=rule.effect,
        risk=rule.risk,
    )


def analyze(
    window: Window,
    *,
    rules: tuple[Rule, ...] = DEFAULT_RULES,
    slo: Slo | None = None,
    config: Mapping[str, Any] | None = None,
) -> Analysis:
    """Evaluate ``rules`` over ``window``.

    Args:
        window: one instance's window (or a pool of instances, see ``combine``).
        rules: the rule table; :data:`DEFAULT_RULES` unless the team extends it.
        slo: latency targets used by ``*_vs_slo`` signals and the health score.
        config: the configuration currently applied, when known (for the concurrency cap).

    Returns:
        Findings (most severe first), rules that could not be evaluated, every signal, and the
        health score of the window.

    Raises:
        AnalysisError: the rule table is invalid.
    """
    validate_rules(rules)
    slo = slo or Slo()
    signals = compute_signals(window, slo=slo, config=config)
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    for rule in rules:
        if window.server not in rule.servers:
            continue
        result = _evaluate(rule, window, signals)
        if isinstance(result, Finding):
            findings.append(result)
        elif isinstance(result, Skipped):
            skipped.append(result)
    findings.sort(key=lambda f: f.severity.rank)
    return Analysis(
        server=window.server,
        window=window.describe(),
        signals=signals,
        findings=tuple(findings),
        skipped=tuple(skipped),
        health=health_score(signals, slo=slo),
    )
