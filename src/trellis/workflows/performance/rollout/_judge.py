"""Canary judgment: one window of canary instances against the baseline running beside them.

Semantics follow ``research/rollout.md``: compare against a *concurrent* baseline over the
same wall-clock window, never against history; three verdicts, where too little data or a
grey zone is ``inconclusive`` (hold and ask a human), never ``pass``; every check result
records the metric, both observed values, the threshold and the window.

Three kinds of check:

* :class:`LatencyCheck`: histogram deltas of both sides compared with a one-sided
  Mann-Whitney U test *and* a minimum effect size on a quantile. A statistically significant
  shift smaller than the minimum effect passes (too small to matter); an effect above the
  minimum without significance is the grey zone. An optional absolute ceiling fails outright.
* :class:`ErrorRateCheck`: failed (or aborted) share of requests; sparse counts, so a
  two-proportion test rather than a rank test.
* :class:`SignalCheck`: any analysis signal (KV usage, queue share, preemption ratio, ...)
  against an absolute ceiling and a ceiling relative to the baseline.
* :class:`HealthCheck`: the 0-1 health score, absolute floor and maximum drop from baseline.

The significance level is split evenly across the statistical tests of one judgment
(Bonferroni), so adding checks does not inflate false alarms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trellis.workflows.performance.analysis import Slo, compute_signals, health_score
from trellis.workflows.performance.collectors import Histogram, LatencyMetric, Window, combine
from trellis.workflows.performance.errors import AnalysisError
from trellis.workflows.performance.rollout._stats import mann_whitney_grouped, two_proportion_test


class Verdict(StrEnum):
    """Outcome of a check or of a whole window."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check saw and decided."""

    check: str
    """Check name (``ttft_p95``, ``error_ratio``, ...)."""
    metric: str
    verdict: Verdict | None
    """``None`` when the check does not apply (neither side exports the metric)."""
    canary: float | None
    baseline: float | None
    threshold: float | None
    """The threshold the deciding comparison used (absolute value or relative limit)."""
    reason: str
    window: Mapping[str, object]
    n_canary: float | None = None
    n_baseline: float | None = None
    p_value: float | None = None
    effect: float | None = None
    """Relative change of canary against baseline (0.25 = 25 % higher)."""
    critical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "metric": self.metric,
            "verdict": None if self.verdict is None else self.verdict.value,
            "canary": self.canary,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "reason": self.reason,
            "window": dict(self.window),
            "n_canary": self.n_canary,
            "n_baseline": self.n_baseline,
            "p_value": self.p_value,
            "effect": self.effect,
            "critical": self.critical,
        }

    def __repr__(self) -> str:
        verdict = "n/a" if self.verdict is None else self.verdict.value
        return (
            f"CheckResult({self.check}: {verdict}, canary={self.canary}, baseline={self.baseline}, "
            f"{self.reason!r})"
        )


@dataclass(frozen=True, slots=True)
class _Context:
    canary: Window
    baseline: Window
    canary_signals: Mapping[str, float | None]
    baseline_signals: Mapping[str, float | None]
    alpha: float
    """Per-test significance level after the Bonferroni split."""
    window: Mapping[str, object]


def _relative(canary: float, baseline: float) -> float:
    if baseline > 0:
        return canary / baseline - 1.0
    return 0.0 if canary <= 0 else math.inf


def _aligned_groups(x: Histogram, y: Histogram) -> list[tuple[float, float]]:
    """Per-bucket counts of both histograms over the union of their bounds."""

    def at(h: Histogram, bound: float) -> float:
        value = 0.0
        for upper, count in h.buckets:
            if upper > bound:
                break
            value = count
        return value

    groups: list[tuple[float, float]] = []
    previous_x = previous_y = 0.0
    for bound in sorted({b for b, _ in x.buckets} | {b for b, _ in y.buckets}):
        cx, cy = max(at(x, bound), previous_x), max(at(y, bound), previous_y)
        groups.append((cx - previous_x, cy - previous_y))
        previous_x, previous_y = cx, cy
    return groups


@dataclass(frozen=True, slots=True)
class LatencyCheck:
    """Latency of canary vs baseline from histogram deltas.

    Fails when the canary's quantile exceeds ``absolute_max``, or when it is more than
    ``min_effect`` above the baseline's *and* the rank test finds the canary slower.
    """

    metric: LatencyMetric = "ttft"
    quantile: float = 0.95
    min_effect: float = 0.2
    """Smallest relative quantile increase that counts as a regression (0.2 = +20 %)."""
    absolute_max: float | None = None
    """Ceiling on the canary's quantile, seconds."""
    min_observations: float = 100.0
    """Observations per side below which the check is inconclusive."""
    critical: bool = False
    statistical: bool = field(default=True, init=False)

    @property
    def name(self) -> str:
        return f"{self.metric}_p{round(self.quantile * 100)}"

    def evaluate(self, ctx: _Context) -> CheckResult:
        canary, baseline = ctx.canary.distribution(self.metric), ctx.baseline.distribution(self.metric)

        def result(verdict: Verdict | None, reason: str, **extra: Any) -> CheckResult:
            return CheckResult(
                check=self.name,
                metric=self.metric,
                verdict=verdict,
                reason=reason,
                window=ctx.window,
                critical=self.critical,
                **{"canary": None, "baseline": None, "threshold": None, **extra},
            )

        if canary is None and baseline is None:
            return result(None, f"{self.metric} is not exported by this server")
        if not isinstance(canary, Histogram) or not isinstance(baseline, Histogram):
            return result(Verdict.INCONCLUSIVE, f"{self.metric} histogram missing on one side")
        if canary.count < self.min_observations or baseline.count < self.min_observations:
            return result(
                Verdict.INCONCLUSIVE,
                f"too few observations (canary {canary.count:g}, baseline {baseline.count:g}; "
                f"need {self.min_observations:g} each)",
                n_canary=canary.count,
                n_baseline=baseline.count,
                threshold=self.min_observations,
            )
        cq, bq = canary.quantile(self.quantile), baseline.quantile(self.quantile)
        if cq is None or bq is None:
            return result(Verdict.INCONCLUSIVE, f"{self.name} cannot be estimated from the buckets")
        effect = _relative(cq, bq)
        test = mann_whitney_grouped(_aligned_groups(canary, baseline), alternative="greater")
        figures: dict[str, Any] = {
            "canary": cq,
            "baseline": bq,
            "n_canary": canary.count,
            "n_baseline": baseline.count,
            "p_value": test.p_value,
            "effect": effect,
        }
        if self.absolute_max is not None and cq > self.absolute_max:
            return result(
                Verdict.FAIL,
                f"canary {self.name} {cq:.4g} s is above the ceiling {self.absolute_max:g} s",
                threshold=self.absolute_max,
                **figures,
            )
        significant = test.p_value < ctx.alpha
        if effect > self.min_effect and significant:
            verdict, reason = (
                Verdict.FAIL,
                f"canary {self.name} is {effect:+.0%} vs baseline (limit +{self.min_effect:.0%}) and the "
                f"rank test finds it slower (p={test.p_value:.2g} < {ctx.alpha:.2g})",
            )
        elif effect > self.min_effect:
            verdict, reason = (
                Verdict.INCONCLUSIVE,
                f"canary {self.name} is {effect:+.0%} vs baseline (limit +{self.min_effect:.0%}) but the "
                f"rank test is not significant (p={test.p_value:.2g} >= {ctx.alpha:.2g}): grey zone",
            )
        elif significant:
            verdict, reason = (
                Verdict.PASS,
                f"canary is slower by rank (p={test.p_value:.2g}) but {self.name} moved only {effect:+.0%}, "
                f"below the minimum effect +{self.min_effect:.0%}",
            )
        else:
            verdict, reason = (
                Verdict.PASS,
                f"canary {self.name} {effect:+.0%} vs baseline, within +{self.min_effect:.0%}",
            )
        return result(verdict, reason, threshold=self.min_effect, **figures)


@dataclass(frozen=True, slots=True)
class ErrorRateCheck:
    """Failed (``error_ratio``) or rejected (``aborted_ratio``) share of finished requests."""

    metric: str = "error_ratio"
    absolute_max: float = 0.05
    """Canary share above this fails outright."""
    max_increase: float = 0.01
    """Canary share may exceed the baseline's by this much (absolute, 0.01 = one point)."""
    min_requests: float = 100.0
    critical: bool = True
    statistical: bool = field(default=True, init=False)

    @property
    def name(self) -> str:
        return self.metric

    def evaluate(self, ctx: _Context) -> CheckResult:
        counter = {"error_ratio": "requests_failed", "aborted_ratio": "requests_aborted"}.get(self.metric)
        if counter is None:
            raise AnalysisError(
                f"ErrorRateCheck.metric must be error_ratio or aborted_ratio, got {self.metric!r}"
            )
        nc, nb = ctx.canary.increase("requests_finished"), ctx.baseline.increase("requests_finished")
        ec, eb = ctx.canary.increase(counter), ctx.baseline.increase(counter)

        def result(verdict: Verdict | None, reason: str, **extra: Any) -> CheckResult:
            base: dict[str, Any] = {
                "canary": None,
                "baseline": None,
                "threshold": None,
                "n_canary": nc,
                "n_baseline": nb,
            }
            return CheckResult(
                check=self.name,
                metric=self.metric,
                verdict=verdict,
                reason=reason,
                window=ctx.window,
                critical=self.critical,
                **{**base, **extra},
            )

        if (nc is None or ec is None) and (nb is None or eb is None):
            return result(None, f"{self.metric} is not exported by this server")
        if nc is None or ec is None or nb is None or eb is None:
            return result(Verdict.INCONCLUSIVE, f"{self.metric} missing on one side")
        if nc < self.min_requests or nb < self.min_requests:
            return result(
                Verdict.INCONCLUSIVE,
                f"too few requests (canary {nc:g}, baseline {nb:g}; need {self.min_requests:g} each)",
                threshold=self.min_requests,
            )
        test = two_proportion_test(min(ec, nc), nc, min(eb, nb), nb)
        figures: dict[str, Any] = {"canary": test.rate_x, "baseline": test.rate_y, "p_value": test.p_value}
        figures["effect"] = _relative(test.rate_x, test.rate_y)
        if test.rate_x > self.absolute_max:
            return result(
                Verdict.FAIL,
                f"canary {self.metric} {test.rate_x:.2%} is above the ceiling {self.absolute_max:.2%}",
                threshold=self.absolute_max,
                **figures,
            )
        limit = test.rate_y + self.max_increase
        if test.rate_x <= limit:
            return result(
                Verdict.PASS,
                f"canary {self.metric} {test.rate_x:.2%} <= baseline + margin {limit:.2%}",
                threshold=limit,
                **figures,
            )
        if test.p_value < ctx.alpha:
            return result(
                Verdict.FAIL,
                f"canary {self.metric} {test.rate_x:.2%} > baseline + margin {limit:.2%} "
                f"(p={test.p_value:.2g} < {ctx.alpha:.2g})",
                threshold=limit,
                **figures,
            )
        return result(
            Verdict.INCONCLUSIVE,
            f"canary {self.metric} {test.rate_x:.2%} > baseline + margin {limit:.2%} but not significant "
            f"(p={test.p_value:.2g})",
            threshold=limit,
            **figures,
        )


@dataclass(frozen=True, slots=True)
class SignalCheck:
    """An analysis signal against an absolute and a baseline-relative ceiling.

    Passes when canary <= ``absolute_max`` and canary <= baseline x (1 + ``max_relative_increase``)
    + ``slack``. No statistical test: use it for gauges and ratios with little noise.
    """

    signal: str
    absolute_max: float | None = None
    max_relative_increase: float | None = None
    slack: float = 0.0
    """Absolute allowance added to the relative limit (keeps near-zero baselines usable)."""
    critical: bool = False
    statistical: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return self.signal

    def evaluate(self, ctx: _Context) -> CheckResult:
        cv, bv = ctx.canary_signals.get(self.signal), ctx.baseline_signals.get(self.signal)

        def result(verdict: Verdict | None, reason: str, threshold: float | None = None) -> CheckResult:
            effect = None if cv is None or bv is None else _relative(cv, bv)
            return CheckResult(
                check=self.name,
                metric=self.signal,
                verdict=verdict,
                canary=cv,
                baseline=bv,
                threshold=threshold,
                reason=reason,
                window=ctx.window,
                effect=effect,
                critical=self.critical,
            )

        if cv is None and bv is None:
            return result(None, f"{self.signal} is not available for this server")
        if cv is None:
            return result(Verdict.INCONCLUSIVE, f"{self.signal} missing on the canary")
        if self.absolute_max is not None and cv > self.absolute_max:
            return result(
                Verdict.FAIL, f"canary {self.signal} {cv:.4g} > {self.absolute_max:g}", self.absolute_max
            )
        if self.max_relative_increase is not None:
            if bv is None:
                return result(Verdict.INCONCLUSIVE, f"{self.signal} missing on the baseline")
            limit = bv * (1.0 + self.max_relative_increase) + self.slack
            if cv > limit:
                return result(
                    Verdict.FAIL,
                    f"canary {self.signal} {cv:.4g} > baseline-relative limit {limit:.4g}",
                    limit,
                )
            return result(Verdict.PASS, f"canary {self.signal} {cv:.4g} <= {limit:.4g}", limit)
        return result(Verdict.PASS, f"canary {self.signal} {cv:.4g} within limits", self.absolute_max)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The health score: canary >= ``min_score`` and >= baseline - ``max_drop``."""

    min_score: float = 0.5
    max_drop: float = 0.1
    critical: bool = False
    statistical: bool = field(default=False, init=False)
    slo: Slo = field(default_factory=Slo)

    @property
    def name(self) -> str:
        return "health"

    def evaluate(self, ctx: _Context) -> CheckResult:
        cv = health_score(ctx.canary_signals, slo=self.slo).value
        bv = health_score(ctx.baseline_signals, slo=self.slo).value

        def result(verdict: Verdict, reason: str, threshold: float | None) -> CheckResult:
            return CheckResult(
                check=self.name,
                metric="health_score",
                verdict=verdict,
                canary=cv,
                baseline=bv,
                threshold=threshold,
                reason=reason,
                window=ctx.window,
                effect=None if cv is None or bv is None else cv - bv,
                critical=self.critical,
            )

        if cv is None or bv is None:
            return result(Verdict.INCONCLUSIVE, "health score has no data on one side", None)
        if cv < self.min_score:
            return result(Verdict.FAIL, f"canary health {cv:.3f} < floor {self.min_score:g}", self.min_score)
        limit = bv - self.max_drop
        if cv < limit:
            return result(
                Verdict.FAIL, f"canary health {cv:.3f} < baseline {bv:.3f} - {self.max_drop:g}", limit
            )
        return result(Verdict.PASS, f"canary health {cv:.3f} (baseline {bv:.3f})", limit)


Check = LatencyCheck | ErrorRateCheck | SignalCheck | HealthCheck


def default_checks(slo: Slo | None = None) -> tuple[Check, ...]:
    """A sensible default gate: TTFT/ITL/e2e by rank test, error share (critical), preemptions, health."""
    slo = slo or Slo()
    return (
        LatencyCheck("ttft", 0.95, min_effect=0.2),
        LatencyCheck("itl", 0.95, min_effect=0.2),
        LatencyCheck("e2e", 0.99, min_effect=0.25),
        ErrorRateCheck("error_ratio", absolute_max=0.05, max_increase=0.01, critical=True),
        SignalCheck("preemption_ratio", max_relative_increase=1.0, slack=0.01),
        HealthCheck(min_score=0.5, max_drop=0.1, slo=slo),
    )


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """How one window is judged."""

    checks: tuple[Check, ...] = field(default_factory=default_checks)
    alpha: float = 0.05
    """Family-wise significance level, split across the statistical checks."""
    min_requests: float = 200.0
    """Finished requests per side below which the whole window is inconclusive."""
    max_skew_seconds: float = 30.0
    """How far apart the canary and baseline windows' starts (and ends) may be."""
    slo: Slo = field(default_factory=Slo)


@dataclass(frozen=True, slots=True)
class Judgment:
    """The verdict on one window, with every check's result."""

    verdict: Verdict
    reason: str
    results: tuple[CheckResult, ...]
    window: Mapping[str, object]
    critical_failure: bool

    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.verdict is Verdict.FAIL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "critical_failure": self.critical_failure,
            "window": dict(self.window),
            "results": [r.to_dict() for r in self.results],
        }

    def __repr__(self) -> str:
        return f"Judgment({self.verdict.value}: {self.reason!r})"


def _pool(side: Window | Sequence[Window], label: str) -> Window:
    if isinstance(side, Window):
        return side
    if not side:
        raise AnalysisError(f"no {label} window to judge")
    return combine(side)


def judge(
    canary: Window | Sequence[Window],
    baseline: Window | Sequence[Window],
    policy: CanaryPolicy | None = None,
) -> Judgment:
    """Judge canary instances against the baseline instances over the same window.

    Args:
        canary: the canary instances' windows (pooled when several).
        baseline: the baseline instances' windows, covering the same wall-clock interval.
        policy: checks and thresholds; :class:`CanaryPolicy` defaults otherwise.

    Raises:
        AnalysisError: the sides are of different servers, or their windows are not concurrent.
    """
    policy = policy or CanaryPolicy()
    c, b = _pool(canary, "canary"), _pool(baseline, "baseline")
    if c.server is not b.server:
        raise AnalysisError(f"canary is {c.server.value} but baseline is {b.server.value}")
    skew = max(abs(c.start - b.start), abs(c.end - b.end))
    if skew > policy.max_skew_seconds:
        raise AnalysisError(
            f"canary and baseline windows are not concurrent: they differ by {skew:.1f} s "
            f"(max_skew_seconds={policy.max_skew_seconds:g}); scrape both sides over the same interval"
        )
    described: dict[str, object] = {
        "start": max(c.start, b.start),
        "end": min(c.end, b.end),
        "seconds": round(min(c.end, b.end) - max(c.start, b.start), 3),
        "canary_instances": c.instances,
        "baseline_instances": b.instances,
    }
    tests = sum(1 for check in policy.checks if check.statistical) or 1
    ctx = _Context(
        canary=c,
        baseline=b,
        canary_signals=compute_signals(c, slo=policy.slo),
        baseline_signals=compute_signals(b, slo=policy.slo),
        alpha=policy.alpha / tests,
        window=described,
    )
    results = tuple(check.evaluate(ctx) for check in policy.checks)
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    inconclusive = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    critical = any(r.critical for r in failed)
    nc, nb = c.increase("requests_finished"), b.increase("requests_finished")
    # Too little data trumps everything, failures included: a canary must not be rolled back
    # (nor promoted) on a handful of requests.
    if nc is None or nb is None or min(nc, nb) < policy.min_requests:
        reason = f"too little data: {nc} canary / {nb} baseline requests (need {policy.min_requests:g} each)"
        return Judgment(Verdict.INCONCLUSIVE, reason, results, described, False)
    if failed:
        names = ", ".join(r.check for r in failed)
        return Judgment(Verdict.FAIL, f"failed: {names}", results, described, critical)
    if inconclusive:
        names = ", ".join(r.check for r in inconclusive)
        return Judgment(Verdict.INCONCLUSIVE, f"inconclusive: {names}", results, described, False)
    if all(r.verdict is None for r in results):
        return Judgment(Verdict.INCONCLUSIVE, "no check applies to this server", results, described, False)
    return Judgment(Verdict.PASS, "every applicable check passed", results, described, False)
