"""trellis.workflows.performance.analysis: every rule on crafted scenarios, and the health score."""

from __future__ import annotations

import pytest

from trellis.workflows.performance.analysis import (
    DEFAULT_RULES,
    SIGNALS,
    Condition,
    Rule,
    Severity,
    Slo,
    analyze,
    compute_signals,
    health_score,
    validate_rules,
)
from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.errors import AnalysisError
from trellis.workflows.performance.testing import crafted_window, histogram

VLLM, TGI, SGLANG = ServerType.VLLM, ServerType.TGI, ServerType.SGLANG

# Window latency shapes: queue ~2 s and e2e ~4 s -> queue_share 0.5; or hardly any queueing.
QUEUED = {"queue_time": histogram({2.0: 100}), "e2e": histogram({4.0: 100})}
UNQUEUED = {"queue_time": histogram({0.025: 100}), "e2e": histogram({8.0: 100})}


def rule_ids(window: object, **kwargs: object) -> list[str]:
    return [f.rule_id for f in analyze(window, **kwargs).findings]  # type: ignore[arg-type]


class TestQueueAdmissionCapped:
    def test_fires_with_evidence_when_queueing_with_free_kv_at_the_cap(self) -> None:
        w = crafted_window(
            gauges={"requests_waiting": 12, "requests_running": 47, "kv_cache_usage": 0.35},
            increases={"requests_finished": 100},
            distributions=QUEUED,
        )
        analysis = analyze(w, config={"max_num_seqs": 48})
        finding = next(f for f in analysis.findings if f.rule_id == "queue-admission-capped")
        evidence = {e.metric: e for e in finding.evidence}
        assert set(evidence) == {"waiting_share", "kv_usage_mean", "queue_share", "utilization"}
        assert evidence["kv_usage_mean"].observed == pytest.approx(0.35)
        assert evidence["kv_usage_mean"].threshold == 0.7
        assert evidence["kv_usage_mean"].comparator == "<"
        assert evidence["utilization"].observed == pytest.approx(47 / 48)
        assert evidence["waiting_share"].window["scrapes"] == 6
        assert evidence["waiting_share"].window["seconds"] == 50.0
        assert "35%" in finding.text
        assert "12.0" in finding.text
        assert [k.knob for k in finding.knobs] == ["max_num_seqs", "max_num_batched_tokens"]

    def test_silent_when_the_kv_cache_is_the_limit(self) -> None:
        w = crafted_window(gauges={"requests_waiting": 12, "kv_cache_usage": 0.8}, distributions=QUEUED)
        assert "queue-admission-capped" not in rule_ids(w)

    def test_sglang_uses_its_documented_kv_threshold(self) -> None:
        w = crafted_window(
            SGLANG, gauges={"requests_waiting": 12, "kv_cache_usage": 0.8}, distributions=QUEUED
        )
        finding = next(f for f in analyze(w).findings if f.rule_id == "queue-admission-capped")
        assert next(e for e in finding.evidence if e.metric == "kv_usage_mean").threshold == 0.9
        assert finding.knobs[0].knob == "schedule_conservativeness"
        assert finding.knobs[0].value == 0.3

    def test_occasional_queueing_is_not_enough(self) -> None:
        w = crafted_window(gauges={"requests_waiting": [0, 0, 3, 0, 2, 0], "kv_cache_usage": 0.2})
        assert "queue-admission-capped" not in rule_ids(w)


class TestKvCachePressure:
    def test_fires_as_critical(self) -> None:
        w = crafted_window(gauges={"kv_cache_usage": 0.96, "requests_waiting": [0, 4, 6, 2, 8, 0]})
        finding = analyze(w).findings[0]
        assert finding.rule_id == "kv-cache-pressure"
        assert finding.severity is Severity.CRITICAL
        assert "96%" in finding.text

    def test_full_cache_without_queue_is_fine(self) -> None:
        w = crafted_window(gauges={"kv_cache_usage": 0.96, "requests_waiting": 0})
        assert "kv-cache-pressure" not in rule_ids(w)


class TestPreemptionAndRetraction:
    def test_vllm_preemptions_per_finished_request(self) -> None:
        w = crafted_window(increases={"requests_finished": 1000, "preemptions": 50})
        finding = next(f for f in analyze(w).findings if f.rule_id == "preemption-thrash")
        assert finding.evidence[0].observed == pytest.approx(0.05)

    def test_too_few_requests_skip_the_rule_with_a_reason(self) -> None:
        w = crafted_window(increases={"requests_finished": 10, "preemptions": 5})
        analysis = analyze(w)
        assert "preemption-thrash" not in [f.rule_id for f in analysis.findings]
        skipped = {s.rule_id: s.reason for s in analysis.skipped}
        assert "needs 50 finished requests" in skipped["preemption-thrash"]

    def test_sglang_retractions_per_minute(self) -> None:
        w = crafted_window(SGLANG, gauges={"retracted_requests": [0, 2, 0, 1, 3, 0]})
        finding = next(f for f in analyze(w).findings if f.rule_id == "retraction-thrash")
        # 3 of 6 scrapes showed retractions over 50 s: 3.6 per minute.
        assert finding.evidence[0].observed == pytest.approx(3.6)

    def test_preemption_rule_does_not_apply_to_tgi(self) -> None:
        w = crafted_window(TGI, increases={"requests_finished": 1000, "preemptions": 500})
        analysis = analyze(w)
        assert "preemption-thrash" not in [f.rule_id for f in analysis.findings]
        assert "preemption-thrash" not in [s.rule_id for s in analysis.skipped]


class TestLatencyRules:
    def test_prefill_bound_when_ttft_is_over_target_without_queueing(self) -> None:
        w = crafted_window(
            increases={"requests_finished": 100},
            distributions={"ttft": histogram({4.0: 100}), **UNQUEUED},
        )
        finding = next(f for f in analyze(w, slo=Slo(ttft_p95=2.0)).findings if f.rule_id == "prefill-bound")
        observed = {e.metric: e.observed for e in finding.evidence}
        # All 100 TTFTs in (2, 4]: p95 interpolates to 2 + 2 x 0.95 = 3.9 s, 1.95x the 2 s target.
        assert observed["ttft_p95_vs_slo"] == pytest.approx(3.9 / 2.0)
        assert observed["queue_share"] < 0.2

    def test_ttft_over_target_because_of_queueing_is_not_prefill_bound(self) -> None:
        w = crafted_window(
            increases={"requests_finished": 100}, distributions={"ttft": histogram({4.0: 100}), **QUEUED}
        )
        assert "prefill-bound" not in rule_ids(w)

    def test_decode_bound_on_inter_token_latency(self) -> None:
        w = crafted_window(
            increases={"requests_finished": 100}, distributions={"itl": histogram({0.25: 5000})}
        )
        assert "decode-bound" in rule_ids(w, slo=Slo(itl_p95=0.1))
        assert "decode-bound" not in rule_ids(w, slo=Slo(itl_p95=0.5))

    def test_tgi_ttft_is_approximated_from_queue_and_prefill(self) -> None:
        w = crafted_window(
            TGI,
            increases={"requests_finished": 100},
            distributions={"queue_time": histogram({1.0: 100}), "prefill_time": histogram({2.0: 100})},
        )
        signals = compute_signals(w)
        assert signals["ttft_p95"] == pytest.approx(
            histogram({1.0: 100}).quantile(0.95) + histogram({2.0: 100}).quantile(0.95)  # type: ignore[operator]
        )


class TestOtherRules:
    def test_low_utilisation(self) -> None:
        w = crafted_window(gauges={"requests_waiting": 0, "kv_cache_usage": 0.1, "requests_running": 2})
        finding = next(
            f for f in analyze(w, config={"max_num_seqs": 64}).findings if f.rule_id == "low-utilisation"
        )
        assert finding.severity is Severity.INFO
        assert not finding.knobs
        assert "consolidate" in finding.advice

    def test_speculative_decoding_acceptance(self) -> None:
        w = crafted_window(increases={"spec_draft_tokens": 1000, "spec_accepted_tokens": 300})
        assert "spec-decode-ineffective" in rule_ids(w)
        good = crafted_window(increases={"spec_draft_tokens": 1000, "spec_accepted_tokens": 800})
        assert "spec-decode-ineffective" not in rule_ids(good)

    def test_tgi_overload_rejections(self) -> None:
        w = crafted_window(
            TGI, increases={"requests_finished": 1000, "requests_aborted": 40, "requests_failed": 40}
        )
        finding = next(f for f in analyze(w).findings if f.rule_id == "overload-rejections")
        assert finding.knobs[0].knob == "max_concurrent_requests"
        assert finding.evidence[0].observed == pytest.approx(0.04)

    def test_truncation_share_from_finish_reasons(self) -> None:
        w = crafted_window(
            increases={"requests_finished": 1000}, finished_by_reason={"stop": 600, "length": 400}
        )
        assert compute_signals(w)["truncated_ratio"] == pytest.approx(0.4)
        assert "truncation" in rule_ids(w)

    def test_findings_are_ordered_most_severe_first(self) -> None:
        w = crafted_window(
            gauges={"kv_cache_usage": 0.1, "requests_waiting": 0},
            increases={"requests_finished": 1000, "preemptions": 100},
        )
        assert rule_ids(w) == ["preemption-thrash", "low-utilisation"]


class TestRuleTable:
    def test_default_table_is_valid_and_uses_known_signals(self) -> None:
        validate_rules(DEFAULT_RULES)
        assert all(c.signal in SIGNALS for r in DEFAULT_RULES for c in r.when)

    def test_invalid_rows_are_reported_together(self) -> None:
        bad = (
            Rule(id="x", title="x", when=(Condition("no_such_signal", ">", 1),), finding=""),
            Rule(id="x", title="x", when=(), finding=""),
        )
        with pytest.raises(AnalysisError) as caught:
            validate_rules(bad)
        message = caught.value.message
        assert "rules[0] ('x').when[0]: unknown signal 'no_such_signal'" in message
        assert "rules[1] ('x'): duplicate id" in message
        assert "no condition" in message

    def test_a_team_rule_extends_the_table(self) -> None:
        mine = Rule(
            id="slow-e2e",
            title="End-to-end p95 above 3 s",
            when=(Condition("e2e_p95", ">", 3.0),),
            finding="e2e p95 is {e2e_p95:.1f} s; missing figures read {no_such:.1f}",
        )
        w = crafted_window(increases={"requests_finished": 100}, distributions={"e2e": histogram({8.0: 100})})
        finding = next(
            f for f in analyze(w, rules=(*DEFAULT_RULES, mine)).findings if f.rule_id == "slow-e2e"
        )
        assert finding.text.startswith("e2e p95 is 7.")
        assert "nan" in finding.text


class TestHealthScore:
    def test_all_targets_met_scores_one(self) -> None:
        w = crafted_window(
            gauges={"kv_cache_usage": 0.5},
            increases={"requests_finished": 1000, "requests_failed": 0, "preemptions": 0},
            distributions={
                "ttft": histogram({0.25: 1000}),
                "itl": histogram({0.05: 1000}),
                **UNQUEUED,
            },
        )
        score = analyze(w).health
        assert score.value == pytest.approx(1.0)
        assert [c.name for c in score.components] == [
            "ttft", "itl", "e2e", "errors", "queueing", "preemption", "kv_headroom"
        ]  # fmt: skip

    def test_components_map_linearly_and_missing_ones_are_left_out(self) -> None:
        signals: dict[str, float | None] = {"ttft_p95": 3.0, "error_ratio": 0.0}
        score = health_score(signals, slo=Slo(ttft_p95=2.0))
        ttft = next(c for c in score.components if c.name == "ttft")
        assert ttft.score == pytest.approx(0.5)  # halfway between target 2 s and 4 s
        # Only ttft (0.25) and errors (0.20) are measurable: renormalised over 0.45.
        assert score.value == pytest.approx((0.25 * 0.5 + 0.20 * 1.0) / 0.45)
        lines = score.explain()
        assert lines[0].startswith("health: 0.72")
        assert any("itl: no data" in line for line in lines)

    def test_nothing_measurable_is_none_not_zero(self) -> None:
        assert health_score({}).value is None
