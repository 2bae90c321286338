"""trellis.workflows.performance.optimization: findings -> concrete, ordered flag changes."""

from __future__ import annotations

import pytest

from trellis.workflows.performance.analysis import KnobMove, analyze
from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.optimization import knob, plan, propose
from trellis.workflows.performance.testing import crafted_window, histogram

QUEUED = {"queue_time": histogram({2.0: 100}), "e2e": histogram({4.0: 100})}


def admission_capped(server: ServerType = ServerType.VLLM, **config: str) -> object:
    w = crafted_window(
        server, gauges={"requests_waiting": 10, "kv_cache_usage": 0.3}, distributions=QUEUED, config=config
    )
    return analyze(w)


class TestPlan:
    def test_values_come_from_the_callers_config_first(self) -> None:
        analysis = admission_capped()
        result = plan(analysis.findings, "vllm", config={"max_num_seqs": 48})  # type: ignore[attr-defined]
        first = result.steps[0]
        assert (first.knob, first.flag, first.current, first.current_source, first.proposed) == (
            "max_num_seqs", "--max-num-seqs", 48, "config", 72
        )  # fmt: skip
        assert first.rule_id == "queue-admission-capped"
        assert "queue" in first.expected_effect.lower()
        assert first.risk
        # max_num_batched_tokens defaults to a derived value: the proposal says it assumed one.
        second = result.steps[1]
        assert (second.knob, second.current_source, second.current, second.proposed) == (
            "max_num_batched_tokens", "assumed", 8192, 16384
        )  # fmt: skip
        assert result.changes() == {"max_num_seqs": 72, "max_num_batched_tokens": 16384}
        assert result.original() == {"max_num_seqs": 48, "max_num_batched_tokens": 8192}

    def test_current_values_exported_by_the_server_are_used(self) -> None:
        w = crafted_window(
            gauges={"kv_cache_usage": 0.97, "requests_waiting": 5},
            config={"gpu_memory_utilization": "0.85", "cache_dtype": "auto"},
        )
        result = plan(analyze(w).findings, ServerType.VLLM, exported=w.config)
        steps = {s.knob: s for s in result.steps}
        assert steps["gpu_memory_utilization"].current == 0.85
        assert steps["gpu_memory_utilization"].current_source == "metrics"
        assert steps["gpu_memory_utilization"].proposed == 0.9
        assert steps["kv_cache_dtype"].proposed == "fp8"
        assert "Add replicas" in result.advice[0]

    def test_a_knob_at_its_bound_is_skipped_with_a_reason(self) -> None:
        w = crafted_window(gauges={"kv_cache_usage": 0.97, "requests_waiting": 5})
        result = plan(analyze(w).findings, "vllm", config={"gpu_memory_utilization": 0.95})
        assert "gpu_memory_utilization" not in result.changes()
        assert any(s.knob == "gpu_memory_utilization" and "bound" in s.reason for s in result.skipped)

    def test_more_severe_finding_wins_a_conflicting_knob(self) -> None:
        w = crafted_window(
            gauges={"requests_waiting": 10, "kv_cache_usage": 0.3},
            increases={"requests_finished": 1000, "preemptions": 100},
            distributions=QUEUED,
        )
        result = plan(analyze(w).findings, "vllm", config={"max_num_seqs": 256})
        seqs = next(s for s in result.steps if s.knob == "max_num_seqs")
        assert (seqs.rule_id, seqs.direction, seqs.proposed) == ("preemption-thrash", "lower", 171)
        conflict = next(s for s in result.skipped if s.knob == "max_num_seqs")
        assert conflict.rule_id == "queue-admission-capped"
        assert "preemption-thrash" in conflict.reason

    def test_each_server_gets_its_own_flags(self) -> None:
        tgi = plan(admission_capped(ServerType.TGI).findings, "tgi")  # type: ignore[attr-defined]
        assert [s.flag for s in tgi.steps][:2] == ["--max-batch-size", "--max-batch-prefill-tokens"]
        assert next(s for s in tgi.steps if s.knob == "waiting_served_ratio").proposed == 0.15
        sglang = plan(admission_capped(ServerType.SGLANG).findings, "sglang")  # type: ignore[attr-defined]
        assert sglang.steps[0].flag == "--schedule-conservativeness"
        assert sglang.steps[0].proposed == 0.3


class TestPropose:
    def test_moves_respect_the_catalogue(self) -> None:
        entry = knob(ServerType.VLLM, "max_num_seqs")
        assert entry is not None
        assert propose(entry, KnobMove("max_num_seqs", "raise"), 2000) == 2048  # capped at the maximum
        assert propose(entry, KnobMove("max_num_seqs", "lower"), 10) == 8
        caching = knob(ServerType.VLLM, "enable_prefix_caching")
        assert caching is not None
        assert propose(caching, KnobMove("enable_prefix_caching", "enable"), False) is True
        dtype = knob(ServerType.VLLM, "kv_cache_dtype")
        assert dtype is not None
        with pytest.raises(ValueError, match="cannot raise a str flag"):
            propose(dtype, KnobMove("kv_cache_dtype", "raise"), "auto")
