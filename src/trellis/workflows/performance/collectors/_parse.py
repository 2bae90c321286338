"""Prometheus text of vLLM, TGI and SGLang -> one :class:`~._types.Scrape`.

Parsing is ``prometheus_client.parser.text_string_to_metric_families``; everything after it is
a lookup in the per-server name tables below. The parser already absorbs most exporter quirks:
it names a counter family without its ``_total`` suffix whether or not the exporter wrote one
(TGI's Rust exporter does not), it does not care about label order (TGI puts ``le`` last,
``prometheus_client`` first) and it keeps ``_created`` samples apart from ``_total`` ones. What
is left to us:

* ``_created`` samples are skipped, and stray ``..._created`` *gauge* families (seen in vLLM
  0.10 captures) are never looked up;
* a family may appear under an old name (vLLM 0.9 deprecated ``gpu_cache_usage_perc`` and
  ``gpu_prefix_cache_*``; 0.11 renamed ``time_per_output_token_seconds`` to
  ``inter_token_latency_seconds``): each field lists its names, newest first;
* any family may be missing (older servers, optional features, truncated captures): the field
  is ``None``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from trellis.workflows.performance.collectors._types import (
    Distribution,
    Histogram,
    Scrape,
    ServerType,
    Summary,
)
from trellis.workflows.performance.errors import MetricsFormatError

_PREFIXES: Mapping[ServerType, str] = {
    ServerType.VLLM: "vllm:",
    ServerType.TGI: "tgi_",
    ServerType.SGLANG: "sglang:",
}

Labels = Mapping[str, str]
_Where = Callable[[Labels], bool] | None


class _Families:
    """Parsed families by name, with the sample-level lookups the name tables need."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._by_name: dict[str, list[Metric]] = defaultdict(list)
        for family in families:
            self._by_name[family.name].append(family)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def _first(self, names: tuple[str, ...]) -> tuple[str, list[Metric]] | None:
        """The first name with at least one sample (a header without samples counts as missing)."""
        for name in names:
            # An exporter that omits ``# TYPE`` leaves a counter named with its ``_total``.
            for candidate in (name, f"{name}_total"):
                families = self._by_name.get(candidate)
                if families and any(family.samples for family in families):
                    return candidate, families
        return None

    def gauge(self, *names: str, mean: bool = False, where: _Where = None) -> float | None:
        found = self._first(names)
        if found is None:
            return None
        name, families = found
        values = [
            float(s.value)
            for family in families
            for s in family.samples
            if s.name == name and (where is None or where(s.labels)) and not math.isnan(s.value)
        ]
        if not values:
            return None
        return sum(values) / len(values) if mean else sum(values)

    def counter(self, *names: str, where: _Where = None) -> float | None:
        return _total(self.counter_by(*names, label=None, where=where))

    def counter_by(self, *names: str, label: str | None, where: _Where = None) -> dict[str, float] | None:
        """Counter values summed per value of ``label`` (all under ``""`` when ``label`` is None)."""
        found = self._first(names)
        if found is None:
            return None
        name, families = found
        result: dict[str, float] = {}
        for family in families:
            for s in family.samples:
                if s.name.endswith("_created") or (where is not None and not where(s.labels)):
                    continue
                if s.name not in (name, f"{name}_total"):
                    continue
                key = s.labels.get(label, "") if label is not None else ""
                result[key] = result.get(key, 0.0) + float(s.value)
        return result or None

    def distribution(self, *names: str, where: _Where = None) -> Distribution | None:
        found = self._first(names)
        if found is None:
            return None
        name, families = found
        if families[0].type == "summary":
            return self._summary(name, families, where)
        buckets: dict[float, float] = defaultdict(float)
        count = total = 0.0
        seen = False
        for family in families:
            for s in family.samples:
                if where is not None and not where(s.labels):
                    continue
                if s.name == f"{name}_bucket":
                    buckets[float(s.labels["le"])] += float(s.value)
                elif s.name == f"{name}_count":
                    count += float(s.value)
                    seen = True
                elif s.name == f"{name}_sum":
                    total += float(s.value)
                    seen = True
        if not seen and not buckets:
            return None
        ordered = tuple(sorted(buckets.items()))
        if ordered and not seen:
            count = ordered[-1][1] if math.isinf(ordered[-1][0]) else 0.0
        return Histogram(buckets=ordered, count=count, sum=total)

    @staticmethod
    def _summary(name: str, families: list[Metric], where: _Where) -> Summary:
        quantiles: dict[float, float] = {}
        count = total = 0.0
        for family in families:
            for s in family.samples:
                if where is not None and not where(s.labels):
                    continue
                if s.name == name and "quantile" in s.labels:
                    # Summed across series this would be meaningless; keep the largest.
                    q = float(s.labels["quantile"])
                    quantiles[q] = max(quantiles.get(q, float(s.value)), float(s.value))
                elif s.name == f"{name}_count":
                    count += float(s.value)
                elif s.name == f"{name}_sum":
                    total += float(s.value)
        return Summary(quantiles=tuple(sorted(quantiles.items())), count=count, sum=total)

    def info_labels(self, name: str) -> dict[str, str]:
        """Labels of an ``*_info``-style gauge (value 1), merged across its series."""
        labels: dict[str, str] = {}
        for family in self._by_name.get(name, ()):
            for s in family.samples:
                labels.update(s.labels)
        return labels

    def label_value(self, label: str, names: Iterable[str]) -> str | None:
        for name in names:
            for family in self._by_name.get(name, ()):
                for s in family.samples:
                    if label in s.labels:
                        return s.labels[label]
        return None


def _total(values: Mapping[str, float] | None) -> float | None:
    return None if values is None else sum(values.values())


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _label_is(label: str, value: str) -> Callable[[Labels], bool]:
    return lambda labels: labels.get(label) == value


@dataclass(frozen=True, slots=True)
class _Read:
    """What one server's name table extracted (the fields of :class:`Scrape` minus the envelope)."""

    fields: dict[str, Any]
    model_families: tuple[str, ...]


def _read_vllm(f: _Families) -> _Read:
    by_reason = f.counter_by("vllm:request_success", label="finished_reason") or {}
    aborted = by_reason.get("abort", 0.0) if by_reason else None
    config = {k: v for k, v in f.info_labels("vllm:cache_config_info").items() if k != "model_name"}
    fields: dict[str, Any] = {
        "requests_running": f.gauge("vllm:num_requests_running"),
        "requests_waiting": f.gauge("vllm:num_requests_waiting"),
        "kv_cache_usage": f.gauge("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", mean=True),
        "preemptions": f.counter("vllm:num_preemptions"),
        "prompt_tokens": f.counter("vllm:prompt_tokens"),
        "generation_tokens": f.counter("vllm:generation_tokens"),
        "prefix_cache_queries": f.counter("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
        "prefix_cache_hits": f.counter("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
        "requests_finished": _total(by_reason) if by_reason else None,
        "requests_failed": aborted,
        "requests_aborted": aborted,
        "finished_by_reason": by_reason,
        "spec_draft_tokens": f.counter("vllm:spec_decode_num_draft_tokens"),
        "spec_accepted_tokens": f.counter("vllm:spec_decode_num_accepted_tokens"),
        "ttft": f.distribution("vllm:time_to_first_token_seconds"),
        "itl": f.distribution("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        "e2e": f.distribution("vllm:e2e_request_latency_seconds"),
        "queue_time": f.distribution("vllm:request_queue_time_seconds"),
        "prefill_time": f.distribution("vllm:request_prefill_time_seconds"),
        "config": config,
    }
    return _Read(fields, ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:prompt_tokens"))


def _read_tgi(f: _Families) -> _Read:
    success = f.counter("tgi_request_success")
    failures = f.counter_by("tgi_request_failure", label="err")
    # The Rust exporter registers a labelled counter on its first increment: with successes
    # exported and no failure family at all, the honest reading is "no failure yet".
    if failures is None and success is not None:
        failures = {}
    failed = _total(failures)
    max_total = f.gauge("tgi_batch_max_total_tokens")
    config: dict[str, str] = {}
    if max_total is not None:
        config["max_batch_total_tokens"] = f"{max_total:g}"
    fields: dict[str, Any] = {
        "requests_running": f.gauge("tgi_batch_current_size"),
        "requests_waiting": f.gauge("tgi_queue_size"),
        "kv_cache_usage": _ratio(f.gauge("tgi_batch_current_max_tokens"), max_total),
        "prompt_tokens": _sum_of(f.distribution("tgi_request_input_length")),
        "generation_tokens": _sum_of(f.distribution("tgi_request_generated_tokens")),
        "requests_finished": None if success is None or failed is None else success + failed,
        "requests_failed": failed,
        "requests_aborted": None if failures is None else failures.get("overloaded", 0.0),
        "failed_by_reason": failures or {},
        "itl": f.distribution("tgi_request_mean_time_per_token_duration"),
        "e2e": f.distribution("tgi_request_duration"),
        "queue_time": f.distribution("tgi_request_queue_duration"),
        "prefill_time": f.distribution("tgi_batch_forward_duration", where=_label_is("method", "prefill")),
        "config": config,
    }
    return _Read(fields, ())


def _read_sglang(f: _Families) -> _Read:
    prompt = f.counter("sglang:prompt_tokens")
    cached = f.counter("sglang:cached_tokens")
    aborted = f.counter("sglang:num_aborted_requests")
    config: dict[str, str] = {}
    for knob in ("max_total_num_tokens", "max_prefill_tokens", "max_running_requests", "context_len"):
        value = f.gauge(f"sglang:{knob}")
        if value is not None:
            config[knob] = f"{value:g}"
    fields: dict[str, Any] = {
        "requests_running": f.gauge("sglang:num_running_reqs"),
        "requests_waiting": f.gauge("sglang:num_queue_reqs"),
        "kv_cache_usage": f.gauge("sglang:token_usage", mean=True),
        "retracted_requests": f.gauge("sglang:num_retracted_reqs"),
        "max_running_requests": f.gauge("sglang:max_running_requests"),
        "prompt_tokens": prompt,
        "generation_tokens": f.counter("sglang:generation_tokens"),
        "prefix_cache_queries": prompt if cached is not None else None,
        "prefix_cache_hits": cached,
        "requests_finished": f.counter("sglang:num_requests"),
        "requests_failed": aborted,
        "requests_aborted": aborted,
        "ttft": f.distribution("sglang:time_to_first_token_seconds"),
        "itl": f.distribution("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        "e2e": f.distribution("sglang:e2e_request_latency_seconds"),
        "queue_time": f.distribution("sglang:queue_time_seconds"),
        "prefix_cache_hit_rate": f.gauge("sglang:cache_hit_rate", mean=True),
        "spec_accept_rate": f.gauge("sglang:spec_accept_rate", mean=True),
        "generation_throughput": f.gauge("sglang:gen_throughput"),
        "config": config,
    }
    families = (
        "sglang:num_running_reqs",
        "sglang:token_usage",
        "sglang:prompt_tokens",
        "sglang:max_total_num_tokens",
    )
    return _Read(fields, families)


def _sum_of(distribution: Distribution | None) -> float | None:
    return None if distribution is None else distribution.sum


_READERS: Mapping[ServerType, Callable[[_Families], _Read]] = {
    ServerType.VLLM: _read_vllm,
    ServerType.TGI: _read_tgi,
    ServerType.SGLANG: _read_sglang,
}


def _detect(names: Iterable[str], source: str) -> ServerType:
    counts = {server: sum(1 for n in names if n.startswith(prefix)) for server, prefix in _PREFIXES.items()}
    present = [server for server, count in counts.items() if count]
    if not present:
        raise MetricsFormatError(
            source,
            "no vLLM ('vllm:'), TGI ('tgi_') or SGLang ('sglang:') metric family found; "
            "is this an inference server's /metrics (SGLang needs --enable-metrics)?",
        )
    if len(present) > 1:
        found = ", ".join(f"{server.value}: {counts[server]} families" for server in present)
        raise MetricsFormatError(source, f"metrics of several servers in one capture ({found}); pass server=")
    return present[0]


def _families(text: str, source: str) -> _Families:
    try:
        return _Families(list(text_string_to_metric_families(text)))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise MetricsFormatError(source, f"not Prometheus text exposition: {exc}") from exc


def detect_server(text: str, *, source: str = "<text>") -> ServerType:
    """Which server produced ``text``, judged from its metric family names.

    Raises:
        MetricsFormatError: the text does not parse, or holds families of none (or of more than
            one) of vLLM, TGI and SGLang.
    """
    return _detect(_families(text, source).names, source)


def parse_metrics(
    text: str,
    *,
    server: ServerType | str | None = None,
    timestamp: float | None = None,
    source: str = "<text>",
) -> Scrape:
    """Parse one ``/metrics`` capture into a normalised :class:`Scrape`.

    Args:
        text: Prometheus text exposition as served by vLLM, TGI or SGLang.
        server: the server type; detected from the family names when omitted.
        timestamp: when the capture was taken (Unix seconds); now when omitted.
        source: URL or file name, used in error messages and kept on the scrape.

    Raises:
        MetricsFormatError: the text is not Prometheus exposition, or the server cannot be told.

    Example::

        scrape = parse_metrics(Path("vllm.prom").read_text(), timestamp=1718000000.0)
        scrape.requests_waiting, scrape.ttft.quantile(0.95)
    """
    families = _families(text, source)
    kind = ServerType(server) if server is not None else _detect(families.names, source)
    read = _READERS[kind](families)
    model = families.label_value("model_name", families.names) or families.label_value(
        "name", read.model_families
    )
    return Scrape(
        server=kind,
        timestamp=time.time() if timestamp is None else timestamp,
        source=source,
        model=model,
        families=families.names,
        **read.fields,
    )
