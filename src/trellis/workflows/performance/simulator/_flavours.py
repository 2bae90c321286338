"""Per-server dress for the simulated engine: flags accepted, how they map onto the model, and
the ``/metrics`` text in that server's names, labels and exporter dialect.

The simulator's launch defaults are deliberately *mis-tuned* (a low concurrency cap) so that a
fresh fleet shows the admission-capped bottleneck the performance agent is expected to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.simulator._engine import EngineParams, SimEngine
from trellis.workflows.performance.simulator._exposition import Family, render

KnobValue = int | float | bool | str

MODEL = "sim/llama-3-8b-instruct"


@dataclass(frozen=True, slots=True)
class KnobSpec:
    kind: type
    default: KnobValue
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def coerce(self, knob: str, raw: Any) -> KnobValue:
        """``raw`` as this knob's type; raises ``ValueError`` naming the knob when it is not."""
        if self.kind is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise ValueError(f"{knob}: expected a boolean, got {raw!r}")
        if self.kind is str:
            if not isinstance(raw, str) or (self.choices and raw not in self.choices):
                raise ValueError(f"{knob}: expected one of {list(self.choices)}, got {raw!r}")
            return raw
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"{knob}: expected a number, got {raw!r}")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{knob}: expected a number, got {raw!r}") from None
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise ValueError(f"{knob}: {number:g} is outside [{self.minimum:g}, {self.maximum:g}]")
        if self.kind is int:
            if number != int(number):
                raise ValueError(f"{knob}: expected an integer, got {raw!r}")
            return int(number)
        return number


_KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fn")


def _kv_scale(config: Mapping[str, KnobValue]) -> float:
    return 2.0 if str(config.get("kv_cache_dtype", "auto")).startswith("fp8") else 1.0


@dataclass(frozen=True, slots=True)
class Flavour:
    server: ServerType
    knobs: Mapping[str, KnobSpec]
    to_params: Callable[[Mapping[str, KnobValue]], EngineParams]
    bounds: Mapping[str, tuple[float, ...]]
    write: Callable[[SimEngine, Mapping[str, KnobValue]], str]

    def defaults(self) -> dict[str, KnobValue]:
        return {name: spec.default for name, spec in self.knobs.items()}

    def validate(self, changes: Mapping[str, Any]) -> dict[str, KnobValue]:
        """Coerced ``changes``; raises ``ValueError`` listing every unknown knob or bad value."""
        problems: list[str] = []
        result: dict[str, KnobValue] = {}
        for knob, raw in changes.items():
            spec = self.knobs.get(knob)
            if spec is None:
                problems.append(
                    f"unknown knob {knob!r} for {self.server.value} (known: {sorted(self.knobs)})"
                )
                continue
            try:
                result[knob] = spec.coerce(knob, raw)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return result


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split())


def _geometric(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


# -- vLLM (V1 engine, prometheus_client) ------------------------------------------------------

_VLLM_BOUNDS: Mapping[str, tuple[float, ...]] = {
    "ttft": _floats(
        "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1.0 2.5 5.0 7.5 "
        "10.0 20.0 40.0 80.0 160.0 640.0 2560.0"
    ),
    "itl": _floats("0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 0.75 1.0 2.5 5.0 7.5 10.0 20.0 40.0 80.0"),
    "e2e": _floats(
        "0.3 0.5 0.8 1.0 1.5 2.0 2.5 5.0 10.0 15.0 20.0 30.0 40.0 50.0 60.0 "
        "120.0 240.0 480.0 960.0 1920.0 7680.0"
    ),
    "queue_time": _floats(
        "0.3 0.5 0.8 1.0 1.5 2.0 2.5 5.0 10.0 15.0 20.0 30.0 40.0 50.0 60.0 "
        "120.0 240.0 480.0 960.0 1920.0 7680.0"
    ),
    "prefill_time": _floats(
        "0.3 0.5 0.8 1.0 1.5 2.0 2.5 5.0 10.0 15.0 20.0 30.0 40.0 50.0 60.0 "
        "120.0 240.0 480.0 960.0 1920.0 7680.0"
    ),
    "tpot": _floats(
        "0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 0.75 1.0 2.5 5.0 7.5 10.0 20.0 40.0 80.0"
    ),
}


def _vllm_params(config: Mapping[str, KnobValue]) -> EngineParams:
    return EngineParams(
        cap=float(config["max_num_seqs"]),
        mem_fraction=float(config["gpu_memory_utilization"]),
        prefill_budget=float(config["max_num_batched_tokens"]),
        prefix_caching=bool(config["enable_prefix_caching"]),
        kv_scale=_kv_scale(config),
    )


def _vllm_write(engine: SimEngine, config: Mapping[str, KnobValue]) -> str:
    s, c, h = engine.state, engine.state.counters, engine.histograms
    labels = {"engine": "0", "model_name": MODEL}
    block = 16
    info = {
        "block_size": str(block),
        "cache_dtype": str(config["kv_cache_dtype"]),
        "enable_prefix_caching": str(bool(config["enable_prefix_caching"])),
        "gpu_memory_utilization": str(config["gpu_memory_utilization"]),
        "num_gpu_blocks": str(int(s.kv_capacity_tokens // block)),
    }
    families = [
        Family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig").add(1.0, info),
        Family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.").add(
            s.running, labels
        ),
        Family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.").add(
            s.waiting, labels
        ),
        Family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.").add(
            s.kv_usage, labels
        ),
        Family("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.").add(
            math.floor(c["preemptions"]), labels
        ),
        Family("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.").add(
            c["prompt_tokens"], labels
        ),
        Family("vllm:generation_tokens", "counter", "Number of generation tokens processed.").add(
            c["generation_tokens"], labels
        ),
        Family(
            "vllm:prefix_cache_queries",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
        ).add(c["prefix_queries"], labels),
        Family(
            "vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens."
        ).add(math.floor(c["prefix_hits"]), labels),
        Family("vllm:request_success", "counter", "Count of successfully processed requests.")
        .add(math.floor(c["finished_ok"]), {**labels, "finished_reason": "stop"})
        .add(math.floor(c["finished_length"]), {**labels, "finished_reason": "length"})
        .add(math.floor(c["aborted"]), {**labels, "finished_reason": "abort"}),
    ]
    for field, name, text in (
        ("ttft", "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
        ("itl", "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
        ("e2e", "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
        (
            "queue_time",
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
        ),
        (
            "prefill_time",
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
        ),
    ):
        families.append(
            Family(name, "histogram", text).histogram(h[field].cumulative(), h[field].sum, labels)
        )
    return render(families, dialect="python", created=1.7e9)


VLLM_FLAVOUR = Flavour(
    server=ServerType.VLLM,
    knobs={
        "max_num_seqs": KnobSpec(int, 48, 1, 4096),
        "gpu_memory_utilization": KnobSpec(float, 0.9, 0.55, 0.99),
        "max_num_batched_tokens": KnobSpec(int, 8192, 256, 131072),
        "enable_prefix_caching": KnobSpec(bool, True),
        "kv_cache_dtype": KnobSpec(str, "auto", choices=_KV_DTYPES),
        "num_speculative_tokens": KnobSpec(int, 0, 0, 16),
    },
    to_params=_vllm_params,
    bounds=_VLLM_BOUNDS,
    write=_vllm_write,
)


# -- TGI (router, metrics-exporter-prometheus) ------------------------------------------------

_TGI_DURATION = _geometric(0.00015, 1.5, 35)
_TGI_BOUNDS: Mapping[str, tuple[float, ...]] = dict.fromkeys(_VLLM_BOUNDS, _TGI_DURATION)


def _tgi_params(config: Mapping[str, KnobValue]) -> EngineParams:
    return EngineParams(
        cap=float(config["max_batch_size"]),
        mem_fraction=float(config["cuda_memory_fraction"]),
        prefill_budget=float(config["max_batch_prefill_tokens"]),
        prefix_caching=True,
        overcommit=1.0,
        kv_scale=_kv_scale(config),
        reject_above=float(config["max_concurrent_requests"]),
    )


def _tgi_write(engine: SimEngine, config: Mapping[str, KnobValue]) -> str:
    s, c, h = engine.state, engine.state.counters, engine.histograms
    finished = math.floor(c["finished_ok"] + c["finished_length"])
    failure = Family("tgi_request_failure", "counter")
    if c["rejected"] >= 1:
        failure.add(math.floor(c["rejected"]), {"err": "overloaded"})
    if c["aborted"] >= 1:
        failure.add(math.floor(c["aborted"]), {"err": "generation"})
    families = [
        Family("tgi_request_success", "counter", "Number of successful requests").add(finished),
        Family("tgi_request_count", "counter", "Total number of requests").add(
            math.floor(c["requests"] + c["rejected"])
        ),
        Family("tgi_queue_size", "gauge", "Current queue size").add(s.waiting),
        Family("tgi_batch_current_size", "gauge", "Current batch size").add(s.running),
        Family("tgi_batch_current_max_tokens", "gauge", "Maximum tokens for the current batch").add(
            round(s.kv_usage * s.kv_capacity_tokens)
        ),
        Family("tgi_batch_max_total_tokens", "gauge", "Maximum amount of tokens in total.").add(
            round(s.kv_capacity_tokens)
        ),
        Family("tgi_request_input_length", "histogram", "Input token length per request").add(
            c["prompt_tokens"], suffix="_sum"
        ),
        Family("tgi_request_generated_tokens", "histogram", "Generated tokens per request").add(
            c["generation_tokens"], suffix="_sum"
        ),
        Family("tgi_request_skipped_tokens", "summary", "Speculated tokens per request")
        .add(0, {"quantile": "0.5"})
        .add(0, {"quantile": "0.99"})
        .add(0, suffix="_sum")
        .add(finished, suffix="_count"),
    ]
    if failure.samples:
        families.insert(1, failure)
    for field, name, text in (
        ("e2e", "tgi_request_duration", "Request duration"),
        ("queue_time", "tgi_request_queue_duration", "Request queue duration"),
        ("tpot", "tgi_request_mean_time_per_token_duration", "Mean time per token per request"),
    ):
        families.append(Family(name, "histogram", text).histogram(h[field].cumulative(), h[field].sum, {}))
    prefill = h["prefill_time"]
    families.append(
        Family(
            "tgi_batch_forward_duration", "histogram", "Batch forward duration per method (prefill or decode)"
        ).histogram(prefill.cumulative(), prefill.sum, {"method": "prefill"})
    )
    return render(families, dialect="rust")


TGI_FLAVOUR = Flavour(
    server=ServerType.TGI,
    knobs={
        "max_batch_size": KnobSpec(int, 48, 1, 4096),
        "max_concurrent_requests": KnobSpec(int, 128, 1, 100000),
        "max_batch_prefill_tokens": KnobSpec(int, 4096, 64, 131072),
        "waiting_served_ratio": KnobSpec(float, 0.3, 0.0, 10.0),
        "max_waiting_tokens": KnobSpec(int, 20, 1, 10000),
        "cuda_memory_fraction": KnobSpec(float, 0.9, 0.55, 1.0),
        "kv_cache_dtype": KnobSpec(str, "auto", choices=_KV_DTYPES),
    },
    to_params=_tgi_params,
    bounds=_TGI_BOUNDS,
    write=_tgi_write,
)


# -- SGLang (prometheus_client) ---------------------------------------------------------------

_SGLANG_BOUNDS: Mapping[str, tuple[float, ...]] = {
    "ttft": _floats("0.1 0.2 0.4 0.6 0.8 1.0 2.0 4.0 6.0 8.0 10.0 20.0 40.0 60.0 80.0 100.0 200.0 400.0"),
    "itl": _floats(
        "0.002 0.004 0.006 0.008 0.01 0.015 0.02 0.025 0.03 0.035 0.04 0.06 "
        "0.08 0.1 0.2 0.4 0.6 0.8 1.0 2.0 4.0 6.0 8.0"
    ),
    "e2e": _floats(
        "0.1 0.2 0.4 0.6 0.8 1.0 2.0 4.0 6.0 8.0 10.0 20.0 40.0 60.0 80.0 100.0 "
        "200.0 400.0 600.0 1200.0 1800.0 2400.0"
    ),
    "queue_time": _floats(
        "0.0 0.1 0.2 0.5 1.0 2.0 3.0 4.0 5.0 10.0 15.0 20.0 30.0 40.0 50.0 60.0 "
        "70.0 80.0 90.0 100.0 200.0 300.0 400.0 500.0 600.0 1200.0"
    ),
    "prefill_time": _floats("0.1 0.2 0.4 0.6 0.8 1.0 2.0 4.0 6.0 8.0 10.0 20.0 40.0"),
    "tpot": _floats("0.002 0.004 0.006 0.008 0.01 0.015 0.02 0.025 0.03 0.035 0.04 0.06 0.08 0.1 0.2"),
}


def _sglang_params(config: Mapping[str, KnobValue]) -> EngineParams:
    return EngineParams(
        cap=float(config["max_running_requests"]),
        mem_fraction=float(config["mem_fraction_static"]),
        prefill_budget=float(config["chunked_prefill_size"]),
        prefix_caching=not bool(config["disable_radix_cache"]),
        conservativeness=float(config["schedule_conservativeness"]),
        kv_scale=_kv_scale(config),
    )


def _sglang_write(engine: SimEngine, config: Mapping[str, KnobValue]) -> str:
    s, c, h = engine.state, engine.state.counters, engine.histograms
    scheduler = {"engine_type": "unified", "model_name": MODEL, "pp_rank": "0", "tp_rank": "0"}
    tokenizer = {"model_name": MODEL}
    hit_rate = c["prefix_hits"] / c["prefix_queries"] if c["prefix_queries"] else 0.0
    families = [
        Family("sglang:num_running_reqs", "gauge", "The number of running requests.").add(
            s.running, scheduler
        ),
        Family("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.").add(
            s.waiting, scheduler
        ),
        Family("sglang:num_used_tokens", "gauge", "The number of used tokens.").add(
            round(s.kv_usage * s.kv_capacity_tokens), scheduler
        ),
        Family("sglang:token_usage", "gauge", "The token usage.").add(s.kv_usage, scheduler),
        Family("sglang:num_retracted_reqs", "gauge", "The number of retracted requests.").add(
            round(s.retracted_last_tick), scheduler
        ),
        Family("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.").add(hit_rate, scheduler),
        Family("sglang:gen_throughput", "gauge", "The generation throughput (token/s).").add(
            s.throughput_tokens, scheduler
        ),
        Family("sglang:prompt_tokens", "counter", "Number of prefill tokens processed.").add(
            c["prompt_tokens"], tokenizer
        ),
        Family("sglang:generation_tokens", "counter", "Number of generation tokens processed.").add(
            c["generation_tokens"], tokenizer
        ),
        Family("sglang:cached_tokens", "counter", "Number of cached prompt tokens.").add(
            math.floor(c["prefix_hits"]), tokenizer
        ),
        Family("sglang:num_requests", "counter", "Number of requests processed.").add(
            math.floor(c["finished_ok"] + c["finished_length"] + c["aborted"]), tokenizer
        ),
        Family("sglang:num_aborted_requests", "counter", "Number of requests aborted.").add(
            math.floor(c["aborted"]), tokenizer
        ),
    ]
    for field, name, text, labels in (
        (
            "ttft",
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            tokenizer,
        ),
        (
            "itl",
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            tokenizer,
        ),
        (
            "e2e",
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            tokenizer,
        ),
        ("queue_time", "sglang:queue_time_seconds", "Histogram of queueing time in seconds.", scheduler),
    ):
        families.append(
            Family(name, "histogram", text).histogram(h[field].cumulative(), h[field].sum, labels)
        )
    return render(families, dialect="python", created=1.7e9)


SGLANG_FLAVOUR = Flavour(
    server=ServerType.SGLANG,
    knobs={
        "max_running_requests": KnobSpec(int, 48, 1, 8192),
        "mem_fraction_static": KnobSpec(float, 0.88, 0.55, 0.99),
        "chunked_prefill_size": KnobSpec(int, 8192, 256, 131072),
        "schedule_conservativeness": KnobSpec(float, 1.0, 0.05, 5.0),
        "schedule_policy": KnobSpec(str, "fcfs", choices=("fcfs", "lpm", "random", "dfs-weight", "lof")),
        "disable_radix_cache": KnobSpec(bool, False),
        "kv_cache_dtype": KnobSpec(str, "auto", choices=_KV_DTYPES),
        "cuda_graph_max_bs": KnobSpec(int, 160, 1, 4096),
    },
    to_params=_sglang_params,
    bounds=_SGLANG_BOUNDS,
    write=_sglang_write,
)

FLAVOURS: Mapping[ServerType, Flavour] = {
    ServerType.VLLM: VLLM_FLAVOUR,
    ServerType.TGI: TGI_FLAVOUR,
    ServerType.SGLANG: SGLANG_FLAVOUR,
}
