"""trellis.workflows.performance.rollout: rank test, canary judgment and the rollback gate."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from trellis.workflows.performance.collectors import ServerType, Window
from trellis.workflows.performance.errors import AnalysisError
from trellis.workflows.performance.rollout import (
    Action,
    CanaryPolicy,
    ErrorRateCheck,
    LatencyCheck,
    RollbackGate,
    SignalCheck,
    Verdict,
    judge,
    mann_whitney_grouped,
    mann_whitney_u,
    split_instances,
    two_proportion_test,
)
from trellis.workflows.performance.testing import crafted_window, histogram


class TestMannWhitney:
    def test_u_counts_pairs_with_ties_as_halves(self) -> None:
        rng = random.Random(7)
        for _ in range(20):
            x = [rng.choice([1, 2, 2, 3, 5]) for _ in range(rng.randint(1, 9))]
            y = [rng.choice([1, 2, 3, 3, 4]) for _ in range(rng.randint(1, 9))]
            brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
            assert mann_whitney_u(x, y).u == pytest.approx(brute)

    def test_tie_corrected_variance_equals_the_permutation_variance(self) -> None:
        """Exact: the variance of U over every relabelling of the pooled (tied) sample."""
        x, y = [1.0, 2.0, 2.0], [2.0, 3.0, 3.0, 5.0]
        pooled = x + y
        us = []
        for chosen in itertools.combinations(range(len(pooled)), len(x)):
            xs = [pooled[i] for i in chosen]
            ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
            us.append(mann_whitney_u(xs, ys).u)
        assert mann_whitney_u(x, y).variance == pytest.approx(statistics.pvariance(us))

    def test_one_sided_p_values(self) -> None:
        slower = mann_whitney_u([float(v) for v in range(20, 40)], [float(v) for v in range(20)])
        assert slower.p_value < 1e-6
        assert slower.cles == 1.0
        assert mann_whitney_u([float(v) for v in range(20)], [float(v) for v in range(20, 40)]).p_value > 0.99
        # By hand: every x beats y's six values below 7 (60 pairs), 8 beat 8.5, 4 beat 12.5: U = 72.
        x = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        y = [1, 2, 3, 4, 5, 6, 8.5, 12.5, 17, 18]
        result = mann_whitney_u([float(v) for v in x], [float(v) for v in y])
        assert result.u == 72.0
        assert result.variance == 175.0
        expected_z = (72 - 50 - 0.5) / math.sqrt(175.0)
        assert result.z == pytest.approx(expected_z)
        assert result.p_value == pytest.approx(0.5 * math.erfc(expected_z / math.sqrt(2)))

    def test_all_tied_carries_no_evidence(self) -> None:
        result = mann_whitney_grouped([(30.0, 40.0)])
        assert result.p_value == 1.0
        assert result.cles == 0.5

    def test_empty_side_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="both samples"):
            mann_whitney_grouped([(0.0, 4.0)])

    def test_two_proportion_test(self) -> None:
        assert two_proportion_test(30, 1000, 10, 1000).p_value < 0.001
        assert two_proportion_test(10, 1000, 10, 1000).p_value == pytest.approx(0.5)


def side(
    source: str,
    *,
    ttft: dict[float, float],
    finished: float = 1000,
    failed: float = 0,
    start_offset: float = 0.0,
) -> Window:
    return crafted_window(
        ServerType.VLLM,
        source=source,
        increases={"requests_finished": finished, "requests_failed": failed},
        distributions={"ttft": histogram(ttft)},
        interval=10.0 + start_offset,
    )


POLICY = CanaryPolicy(
    checks=(LatencyCheck("ttft", 0.95, min_effect=0.2, min_observations=100), ErrorRateCheck("error_ratio")),
    min_requests=100,
)


class TestJudge:
    def test_identical_behaviour_passes(self) -> None:
        shape = {0.25: 600.0, 0.5: 300.0, 1.0: 100.0}
        judgment = judge(side("canary", ttft=shape), side("baseline", ttft=shape), POLICY)
        assert judgment.verdict is Verdict.PASS
        ttft = judgment.results[0]
        assert ttft.verdict is Verdict.PASS
        assert ttft.effect == pytest.approx(0.0)

    def test_slower_canary_fails_with_the_evidence_recorded(self) -> None:
        canary = side("canary", ttft={0.5: 300.0, 1.0: 500.0, 2.0: 200.0})
        baseline = side("baseline", ttft={0.25: 600.0, 0.5: 300.0, 1.0: 100.0})
        judgment = judge(canary, baseline, POLICY)
        assert judgment.verdict is Verdict.FAIL
        assert not judgment.critical_failure
        result = judgment.failed()[0]
        assert result.check == "ttft_p95"
        assert result.metric == "ttft"
        assert result.canary == pytest.approx(histogram({0.5: 300.0, 1.0: 500.0, 2.0: 200.0}).quantile(0.95))
        assert result.baseline == pytest.approx(
            histogram({0.25: 600.0, 0.5: 300.0, 1.0: 100.0}).quantile(0.95)
        )
        assert result.threshold == 0.2
        assert result.p_value is not None
        assert result.p_value < 1e-6
        assert result.window["seconds"] == 50.0
        assert result.window["canary_instances"] == 1
        assert judgment.to_dict()["results"][0]["verdict"] == "fail"

    def test_significant_but_tiny_shift_passes(self) -> None:
        canary = side("canary", ttft={0.25: 4000.0, 0.5: 5000.0, 1.0: 1000.0}, finished=10000)
        baseline = side("baseline", ttft={0.25: 5000.0, 0.5: 4000.0, 1.0: 1000.0}, finished=10000)
        result = judge(canary, baseline, POLICY).results[0]
        assert result.verdict is Verdict.PASS
        assert result.p_value is not None
        assert result.p_value < 0.01
        assert "below the minimum effect" in result.reason

    def test_big_tail_shift_without_significance_is_the_grey_zone(self) -> None:
        canary = side("canary", ttft={0.25: 138.0, 2.0: 12.0}, finished=150)
        baseline = side("baseline", ttft={0.25: 140.0, 1.0: 10.0}, finished=150)
        judgment = judge(canary, baseline, POLICY)
        assert judgment.verdict is Verdict.INCONCLUSIVE
        assert "grey zone" in judgment.results[0].reason
        assert judgment.results[0].effect is not None
        assert judgment.results[0].effect > 1.0

    def test_too_little_data_is_inconclusive_even_when_worse(self) -> None:
        canary = side("canary", ttft={2.0: 50.0}, finished=50, failed=20)
        baseline = side("baseline", ttft={0.25: 50.0}, finished=50)
        judgment = judge(canary, baseline, POLICY)
        assert judgment.verdict is Verdict.INCONCLUSIVE
        assert "too little data" in judgment.reason

    def test_error_share_over_the_ceiling_is_a_critical_failure(self) -> None:
        shape = {0.25: 1000.0}
        judgment = judge(
            side("canary", ttft=shape, failed=80), side("baseline", ttft=shape, failed=5), POLICY
        )
        assert judgment.verdict is Verdict.FAIL
        assert judgment.critical_failure
        errors = judgment.failed()[0]
        assert (errors.canary, errors.baseline, errors.threshold) == (0.08, 0.005, 0.05)

    def test_relative_signal_check(self) -> None:
        policy = CanaryPolicy(
            checks=(SignalCheck("kv_usage_mean", max_relative_increase=0.1),), min_requests=0
        )
        canary = crafted_window(
            source="c", gauges={"kv_cache_usage": 0.9}, increases={"requests_finished": 10}
        )
        baseline = crafted_window(
            source="b", gauges={"kv_cache_usage": 0.6}, increases={"requests_finished": 10}
        )
        result = judge(canary, baseline, policy).results[0]
        assert result.verdict is Verdict.FAIL
        assert result.threshold == pytest.approx(0.66)

    def test_a_check_the_server_cannot_serve_does_not_apply(self) -> None:
        policy = CanaryPolicy(checks=(LatencyCheck("ttft"), ErrorRateCheck()), min_requests=100)
        tgi = {"requests_finished": 500.0, "requests_failed": 0.0}
        canary = crafted_window(ServerType.TGI, source="c", increases=tgi)
        baseline = crafted_window(ServerType.TGI, source="b", increases=tgi)
        judgment = judge(canary, baseline, policy)
        assert judgment.results[0].verdict is None
        assert judgment.verdict is Verdict.PASS

    def test_baseline_must_run_concurrently(self) -> None:
        shape = {0.25: 1000.0}
        with pytest.raises(AnalysisError, match="not concurrent"):
            judge(side("canary", ttft=shape), side("baseline", ttft=shape, start_offset=20.0), POLICY)

    def test_several_canaries_are_pooled(self) -> None:
        shape = {0.25: 600.0, 0.5: 400.0}
        canaries = [side(f"canary-{i}", ttft=shape, finished=60) for i in range(2)]
        judgment = judge(canaries, side("baseline", ttft=shape), POLICY)
        assert judgment.window["canary_instances"] == 2
        assert judgment.verdict is Verdict.PASS


def judged(verdict: Verdict, *, critical: bool = False) -> object:
    shape_ok = {0.25: 1000.0}
    if verdict is Verdict.PASS:
        return judge(side("c", ttft=shape_ok), side("b", ttft=shape_ok), POLICY)
    if verdict is Verdict.INCONCLUSIVE:
        return judge(side("c", ttft=shape_ok, finished=10), side("b", ttft=shape_ok, finished=10), POLICY)
    failed = 100.0 if critical else 0.0
    return judge(side("c", ttft={2.0: 1000.0}, failed=failed), side("b", ttft=shape_ok), POLICY)


class TestRollbackGate:
    def run(self, gate: RollbackGate, *steps: object) -> list[Action]:
        actions = []
        for step in steps:
            decision = gate.observe_error(step) if isinstance(step, Exception) else gate.observe(step)  # type: ignore[arg-type]
            gate = decision.gate
            actions.append(decision.action)
        return actions

    def test_rolls_back_only_after_k_consecutive_failures(self) -> None:
        fail = judged(Verdict.FAIL)
        assert self.run(RollbackGate(failures_to_rollback=3), fail, fail, fail) == [
            Action.WATCH, Action.WATCH, Action.ROLLBACK
        ]  # fmt: skip

    def test_a_passing_window_breaks_the_streak(self) -> None:
        fail, ok = judged(Verdict.FAIL), judged(Verdict.PASS)
        assert self.run(RollbackGate(failures_to_rollback=2), fail, ok, fail, ok) == [
            Action.WATCH, Action.PROCEED, Action.WATCH, Action.PROCEED
        ]  # fmt: skip

    def test_inconclusive_holds_and_neither_extends_nor_breaks_the_streak(self) -> None:
        fail, unsure = judged(Verdict.FAIL), judged(Verdict.INCONCLUSIVE)
        assert self.run(RollbackGate(failures_to_rollback=2), fail, unsure, fail) == [
            Action.WATCH, Action.HOLD, Action.ROLLBACK
        ]  # fmt: skip

    def test_a_critical_failure_rolls_back_at_once(self) -> None:
        decision = RollbackGate(failures_to_rollback=3).observe(judged(Verdict.FAIL, critical=True))  # type: ignore[arg-type]
        assert decision.action is Action.ROLLBACK
        assert decision.reason.startswith("critical check failed")
        assert decision.to_dict()["judgment"]["critical_failure"] is True

    def test_scrape_errors_never_roll_back(self) -> None:
        fail = judged(Verdict.FAIL)
        error = ConnectionError("refused")
        actions = self.run(
            RollbackGate(failures_to_rollback=2, errors_to_hold=3), fail, error, error, error, fail
        )
        assert actions == [Action.WATCH, Action.WATCH, Action.WATCH, Action.HOLD, Action.ROLLBACK]

    def test_limits_are_validated(self) -> None:
        with pytest.raises(ValueError, match="failures_to_rollback"):
            RollbackGate(failures_to_rollback=0)


class TestSplit:
    def test_canaries_only_grow_with_the_share(self) -> None:
        ids = ["a", "b", "c", "d"]
        assert split_instances(ids, 0.1) == (("a",), ("b", "c", "d"))
        assert split_instances(ids, 0.5) == (("a", "b"), ("c", "d"))
        assert split_instances(ids, 1.0) == (("a", "b", "c", "d"), ())
        assert split_instances(ids, 0.0) == ((), ("a", "b", "c", "d"))
        with pytest.raises(ValueError, match="share"):
            split_instances(ids, 1.5)
