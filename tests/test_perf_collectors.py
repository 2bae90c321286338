"""trellis.workflows.performance.collectors: parsing real captures, windows, scraping."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import httpx
import pytest

from trellis.workflows.performance.collectors import (
    Histogram,
    Scrape,
    ServerType,
    Summary,
    combine,
    detect_server,
    fetch,
    histogram_quantile,
    parse_metrics,
    window,
)
from trellis.workflows.performance.errors import AnalysisError, MetricsFormatError, ScrapeError
from trellis.workflows.performance.simulator import SimulatedFleet

FIXTURES = Path("/work/shared/fixtures/metrics")
ALL_FIXTURES = sorted(FIXTURES.glob("*/*.prom"))


def load(relative: str) -> Scrape:
    path = FIXTURES / relative
    return parse_metrics(path.read_text(), timestamp=0.0, source=path.name)


def interpolate(lower: float, upper: float, below: float, inside: float, rank: float) -> float:
    return lower + (upper - lower) * (rank - below) / inside


class TestEveryFixture:
    def test_the_fixture_set_is_present(self) -> None:
        assert len(ALL_FIXTURES) == 7

    @pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.name)
    def test_parses_and_detects_the_server_from_its_directory(self, path: Path) -> None:
        text = path.read_text()
        scrape = parse_metrics(text, timestamp=1.0, source=path.name)
        assert scrape.server is ServerType(path.parent.name)
        assert detect_server(text) is ServerType(path.parent.name)
        assert scrape.families


class TestVllmV0Capture:
    """datadog-vllm-0.5-v0engine-opt125m.prom: one request of opt-125m."""

    def test_gauges_counters_and_model(self) -> None:
        s = load("vllm/datadog-vllm-0.5-v0engine-opt125m.prom")
        assert s.model == "facebook/opt-125m"
        assert (s.requests_running, s.requests_waiting) == (0.0, 0.0)
        assert s.kv_cache_usage == 0.0  # from the deprecated gpu_cache_usage_perc
        assert (s.preemptions, s.prompt_tokens, s.generation_tokens) == (0.0, 5.0, 7.0)
        assert dict(s.finished_by_reason) == {"length": 1.0}
        assert (s.requests_finished, s.requests_failed) == (1.0, 0.0)
        assert s.prefix_cache_queries is None

    def test_static_config_is_read_from_cache_config_info(self) -> None:
        s = load("vllm/datadog-vllm-0.5-v0engine-opt125m.prom")
        assert s.config["gpu_memory_utilization"] == "0.9"
        assert s.config["enable_prefix_caching"] == "False"
        assert s.config["num_gpu_blocks"] == "7281"

    def test_latency_histograms_and_their_quantiles(self) -> None:
        s = load("vllm/datadog-vllm-0.5-v0engine-opt125m.prom")
        assert isinstance(s.ttft, Histogram)
        assert s.ttft.count == 1
        assert s.ttft.sum == pytest.approx(0.31326723098754883)
        # The one TTFT observation lies in (0.25, 0.5]: the median interpolates to mid-bucket.
        assert s.ttft.quantile(0.5) == pytest.approx(0.375)
        # ITL comes from the pre-0.11 name time_per_output_token_seconds: 6 tokens in (0.025, 0.05].
        assert isinstance(s.itl, Histogram)
        assert s.itl.count == 6
        assert s.itl.quantile(0.5) == pytest.approx(interpolate(0.025, 0.05, 0, 6, 3))
        assert s.e2e is not None
        assert s.e2e.quantile(0.5) == pytest.approx(0.5)
        assert s.queue_time is None


class TestVllmV1Excerpts:
    def test_issue617_mixes_new_and_deprecated_prefix_cache_names(self) -> None:
        s = load("vllm/production-stack-issue617-vllm-0.10.0-v1-excerpt.prom")
        assert s.model == "zai-org/GLM-4.5"
        assert s.kv_cache_usage == pytest.approx(9.75010481363281e-06)
        assert s.prefix_cache_queries == 32.0
        assert s.prefix_cache_hits == 0.0
        # Partial capture: what is not in it stays None.
        assert s.requests_running is None
        assert s.ttft is None

    def test_issue318_header_without_samples_is_missing_not_zero(self) -> None:
        s = load("vllm/production-stack-issue318-vllm-v1-early-excerpt.prom")
        assert s.model == "Qwen/Qwen2.5-Coder-32B-Instruct"
        assert (s.requests_running, s.requests_waiting, s.kv_cache_usage) == (0.0, 0.0, 0.0)
        assert s.prefix_cache_queries is None


class TestTgiCapture:
    """datadog-tgi-payload.prom: counters without _total, le last, a summary, no model label."""

    def test_counters_without_total_suffix(self) -> None:
        s = load("tgi/datadog-tgi-payload.prom")
        assert s.model is None
        assert s.requests_finished == 111.0  # 109 successes + 2 validation failures
        assert s.requests_failed == 2.0
        assert dict(s.failed_by_reason) == {"validation": 2.0}
        assert s.requests_aborted == 0.0
        assert (s.requests_running, s.requests_waiting) == (0.0, 0.0)
        assert (s.prompt_tokens, s.generation_tokens) == (662.0, 3423.0)
        assert s.kv_cache_usage is None  # tgi_batch_max_total_tokens is not in this capture
        assert s.ttft is None

    def test_duration_histograms(self) -> None:
        s = load("tgi/datadog-tgi-payload.prom")
        assert isinstance(s.e2e, Histogram)
        assert s.e2e.count == 109.0
        assert s.e2e.sum == pytest.approx(541.2140316159999)
        assert len(s.e2e.buckets) == 36
        # Median: rank 54.5 between cumulative 51 (le=3.7877) and 77 (le=5.6815).
        expected = interpolate(3.787675244106352, 5.681512866159528, 51, 26, 54.5)
        assert s.e2e.quantile(0.5) == pytest.approx(expected)
        assert s.queue_time is not None
        assert s.queue_time.sum == pytest.approx(295.275961956)
        assert s.itl is not None
        assert s.itl.count == 109
        # prefill_time is the prefill *batch* forward: 16 batches.
        assert s.prefill_time is not None
        assert s.prefill_time.count == 16

    def test_summary_families_parse_as_summaries(self) -> None:
        s = parse_metrics(
            "# TYPE tgi_request_duration summary\n"
            'tgi_request_duration{quantile="0.5"} 1.5\n'
            'tgi_request_duration{quantile="0.99"} 9\n'
            "tgi_request_duration_sum 30\n"
            "tgi_request_duration_count 12\n",
            timestamp=0,
        )
        assert isinstance(s.e2e, Summary)
        assert s.e2e.quantile(0.99) == 9.0
        assert s.e2e.mean == 2.5
        assert s.e2e.quantile(0.95) is None


class TestSglangCaptures:
    def test_docs_sample_of_a_loaded_server(self) -> None:
        s = load("sglang/sglang-docs-production-metrics-sample.prom")
        assert s.model == "meta-llama/Llama-3.1-8B-Instruct"
        assert (s.requests_running, s.requests_waiting) == (162.0, 2826.0)
        assert s.kv_cache_usage == pytest.approx(0.28)
        assert (s.prompt_tokens, s.generation_tokens) == (8128902.0, 7557572.0)
        assert s.prefix_cache_hit_rate == pytest.approx(0.007507552643049313)
        assert s.generation_throughput == pytest.approx(86.50814177726902)
        assert isinstance(s.ttft, Histogram)
        assert s.ttft.count == 11008
        # Most TTFTs are above the last finite bucket (30 s): Prometheus reports that bound.
        assert s.ttft.quantile(0.5) == 30.0
        # p10: rank 1100.8 between cumulative 941 (le=7.5) and 1330 (le=10).
        assert s.ttft.quantile(0.1) == pytest.approx(interpolate(7.5, 10.0, 941, 389, 1100.8))
        assert s.itl is not None
        assert s.itl.count == 7400757
        assert s.e2e is not None
        assert s.e2e.count == 11228

    def test_first_release_uses_name_label_and_static_limit_gauges(self) -> None:
        s = load("sglang/sglang-pr1853-first-metrics-excerpt.prom")
        assert s.model is not None
        assert s.model.startswith("/shared/public/elr-models/meta-llama/Llama-3.2-3B")
        assert s.prompt_tokens == 230794.0
        assert s.max_running_requests == 2231.0
        assert s.config["max_total_num_tokens"] == "570979"
        assert s.requests_running is None

    def test_engine_type_labels(self) -> None:
        s = load("sglang/sglang-pr4412-engine-type-excerpt.prom")
        assert s.model == "/shared/public/models/Meta-Llama-3-8B-Instruct"
        assert (s.requests_running, s.kv_cache_usage, s.generation_throughput) == (0.0, 0.0, 0.0)
        assert s.requests_waiting is None


class TestParsingErrors:
    def test_text_without_inference_metrics_names_the_source(self) -> None:
        with pytest.raises(MetricsFormatError, match=r"node-exporter: no vLLM"):
            parse_metrics("# TYPE up gauge\nup 1\n", source="node-exporter")

    def test_mixed_servers_need_an_explicit_server(self) -> None:
        text = "vllm:num_requests_running 1\ntgi_queue_size 2\n"
        with pytest.raises(MetricsFormatError, match="several servers"):
            parse_metrics(text)
        assert parse_metrics(text, server="tgi", timestamp=0).requests_waiting == 2.0

    def test_malformed_exposition(self) -> None:
        with pytest.raises(MetricsFormatError, match="not Prometheus text"):
            parse_metrics('vllm:num_requests_running{model_name="x} 1\n')

    def test_untyped_counter_keeps_its_total_suffix(self) -> None:
        s = parse_metrics("vllm:num_preemptions_total 4\nvllm:num_requests_running 1\n", timestamp=0)
        assert s.preemptions == 4.0

    def test_data_parallel_engines_are_summed_and_kv_usage_averaged(self) -> None:
        text = (
            '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0"} 3\n'
            'vllm:num_requests_waiting{engine="1"} 4\n'
            '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.2\n'
            'vllm:kv_cache_usage_perc{engine="1"} 0.6\n'
        )
        s = parse_metrics(text, timestamp=0)
        assert s.requests_waiting == 7.0
        assert s.kv_cache_usage == pytest.approx(0.4)


def vllm_text(
    *, finished: float, preempt: float, buckets: list[float], total: float, waiting: float = 0
) -> str:
    bounds = ["0.1", "0.5", "1.0", "+Inf"]
    lines = [
        "# TYPE vllm:num_requests_waiting gauge",
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}',
        "# TYPE vllm:num_preemptions_total counter",
        f'vllm:num_preemptions_total{{model_name="m"}} {preempt}',
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{finished_reason="stop",model_name="m"}} {finished}',
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    lines += [
        f'vllm:time_to_first_token_seconds_bucket{{le="{b}",model_name="m"}} {c}'
        for b, c in zip(bounds, buckets, strict=True)
    ]
    lines += [
        f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {buckets[-1]}',
        f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} {total}',
    ]
    return "\n".join(lines) + "\n"


class TestWindow:
    def test_rates_and_quantiles_come_from_the_difference(self) -> None:
        """Lifetime buckets say TTFT is fast; the last 60 s say it is slow."""
        a = parse_metrics(
            vllm_text(finished=1000, preempt=5, buckets=[900, 990, 1000, 1000], total=80), timestamp=100
        )
        b = parse_metrics(
            vllm_text(finished=1100, preempt=8, buckets=[900, 990, 1080, 1100], total=200), timestamp=160
        )
        w = window(a, b)
        assert w.seconds == 60
        assert w.scrapes == 2
        assert w.increase("requests_finished") == 100
        assert w.rate("requests_finished") == pytest.approx(100 / 60)
        assert w.increase("preemptions") == 3
        ttft = w.distribution("ttft")
        assert isinstance(ttft, Histogram)
        assert ttft.count == 100
        assert ttft.sum == pytest.approx(120)
        # Window buckets: 0 / 0 / 80 / 100. p50 = rank 50 inside (0.5, 1.0] holding 80.
        assert w.quantile("ttft", 0.5) == pytest.approx(interpolate(0.5, 1.0, 0, 80, 50))
        assert w.quantile("ttft", 0.95) == 1.0  # in +Inf: the largest finite bound
        assert b.ttft is not None
        assert b.ttft.quantile(0.5) == pytest.approx(0.1 * 550 / 900)

    def test_counter_reset_counts_the_value_after_the_restart(self) -> None:
        a = parse_metrics(vllm_text(finished=500, preempt=9, buckets=[50, 60, 70, 70], total=10), timestamp=0)
        mid = parse_metrics(
            vllm_text(finished=520, preempt=9, buckets=[50, 60, 80, 90], total=20), timestamp=10
        )
        restarted = parse_metrics(
            vllm_text(finished=30, preempt=1, buckets=[10, 20, 30, 30], total=5), timestamp=20
        )
        w = window(restarted, a, mid)  # any order
        assert w.increase("requests_finished") == 20 + 30
        assert w.increase("preemptions") == 1
        assert "requests_finished" in w.resets
        assert "ttft" in w.resets
        ttft = w.distribution("ttft")
        assert isinstance(ttft, Histogram)
        assert ttft.count == 20 + 30

    def test_gauge_statistics_over_every_scrape(self) -> None:
        scrapes = [
            parse_metrics(
                vllm_text(finished=i, preempt=0, buckets=[0, 0, 0, 0], total=0, waiting=w), timestamp=i
            )
            for i, w in enumerate([0, 3, 5, 0, 2])
        ]
        stats = window(*scrapes).gauge("requests_waiting")
        assert stats is not None
        assert (stats.mean, stats.maximum, stats.positive_share, stats.samples) == (2.0, 5.0, 0.6, 5)

    def test_missing_at_one_end_is_missing(self) -> None:
        a = parse_metrics("vllm:num_requests_running 1\n", timestamp=0)
        b = parse_metrics(vllm_text(finished=5, preempt=0, buckets=[1, 1, 1, 1], total=1), timestamp=5)
        w = window(a, b)
        assert w.increase("requests_finished") is None
        assert w.quantile("ttft", 0.5) is None

    def test_invalid_windows_are_errors(self) -> None:
        a = parse_metrics("vllm:num_requests_running 1\n", timestamp=0, source="a")
        with pytest.raises(AnalysisError, match="at least two"):
            window(a)
        with pytest.raises(AnalysisError, match="one instance"):
            window(a, parse_metrics("vllm:num_requests_running 1\n", timestamp=5, source="b"))
        with pytest.raises(AnalysisError, match="different times"):
            window(a, a)

    def test_combine_pools_instances(self) -> None:
        def w(offset: float) -> Scrape:
            return parse_metrics(
                vllm_text(finished=offset, preempt=0, buckets=[0, 0, offset, offset], total=offset),
                timestamp=offset,
            )

        pooled = combine([window(w(0), w(10)), window(w(10), w(30))])
        assert pooled.instances == 2
        assert pooled.increase("requests_finished") == 30
        ttft = pooled.distribution("ttft")
        assert isinstance(ttft, Histogram)
        assert ttft.count == 30


class TestHistogramQuantile:
    def test_lowest_bucket_starts_at_zero_and_empty_is_none(self) -> None:
        buckets = ((1.0, 4.0), (2.0, 8.0), (math.inf, 8.0))
        assert histogram_quantile(0.25, buckets) == pytest.approx(0.5)
        assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
        assert histogram_quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))) is None
        with pytest.raises(ValueError, match="within"):
            histogram_quantile(1.5, buckets)


class TestFetch:
    async def test_refused_connection_is_a_scrape_error(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ScrapeError, match=f"127.0.0.1:{port}/metrics") as caught:
            await fetch(f"http://127.0.0.1:{port}/metrics", timeout_seconds=2)
        assert caught.value.retryable
        assert caught.value.name == "ScrapeError"

    async def test_live_scrape_and_non_metrics_answers(self) -> None:
        async with SimulatedFleet("sglang", instances=1, speed=0) as fleet, httpx.AsyncClient() as client:
            base = fleet.instances[0].base_url
            scrape = await fetch(fleet.instances[0].metrics_url, client)
            assert scrape.server is ServerType.SGLANG
            assert scrape.source.endswith("/metrics")
            assert scrape.requests_running is not None
            assert scrape.ttft is not None
            with pytest.raises(ScrapeError, match="/health failed: not Prometheus text"):
                await fetch(base + "/health", client)
            with pytest.raises(ScrapeError, match="HTTP 404") as caught:
                await fetch(base + "/nope", client)
            assert caught.value.http_status == 404
