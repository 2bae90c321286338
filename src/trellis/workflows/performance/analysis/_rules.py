"""The bottleneck rule table: data, not code.

Each :class:`Rule` says "when these signals compare so against these thresholds over a long
enough window, the instance has this bottleneck, and these knobs address it". The table
:data:`DEFAULT_RULES` encodes section 4 of ``research/inference_metrics.md``; thresholds
marked *doc* there come from the servers' own documentation, the rest are starting defaults.
Extend it by building a new tuple (``DEFAULT_RULES + (Rule(...),)``) and passing it to
:func:`~trellis.workflows.performance.analysis.analyze`; :func:`validate_rules` checks a table
before use.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from trellis.workflows.performance.analysis._signals import SIGNALS
from trellis.workflows.performance.collectors import ServerType
from trellis.workflows.performance.errors import AnalysisError

Comparator = Literal[">", ">=", "<", "<=", "=="]

COMPARATORS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}

VLLM, TGI, SGLANG = ServerType.VLLM, ServerType.TGI, ServerType.SGLANG


class Severity(StrEnum):
    """How urgently a finding wants attention; orders findings and plans."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison: ``signal <comparator> threshold``."""

    signal: str
    """A name from :data:`~trellis.workflows.performance.analysis.SIGNALS`."""
    comparator: Comparator
    threshold: float
    per_server: Mapping[ServerType, float] = field(default_factory=lambda: MappingProxyType({}))
    """Thresholds that differ by server (e.g. SGLang documents its own KV-usage level)."""
    optional: bool = False
    """When the signal is missing, skip this condition instead of skipping the rule."""

    def threshold_for(self, server: ServerType) -> float:
        return self.per_server.get(server, self.threshold)

    def holds(self, value: float, server: ServerType) -> bool:
        return COMPARATORS[self.comparator](value, self.threshold_for(server))

    def __str__(self) -> str:
        return f"{self.signal} {self.comparator} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class WindowRequirement:
    """How much data a rule needs before it may speak."""

    min_scrapes: int = 5
    """Scrapes inside the window (gauges are sampled once per scrape)."""
    min_seconds: float = 0.0
    min_requests: float = 0.0
    """Requests finished in the window (latency and ratio rules need a few)."""


@dataclass(frozen=True, slots=True)
class KnobMove:
    """A configuration change a rule points at; ``optimization`` turns it into a concrete value."""

    knob: str
    """Knob id in the optimisation catalogue (e.g. ``max_num_seqs``)."""
    direction: Literal["raise", "lower", "enable", "disable", "set"]
    value: str | float | bool | None = None
    """The target for ``set`` (e.g. ``0.3`` for SGLang's ``schedule_conservativeness``)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One bottleneck pattern: all ``when`` conditions must hold over a sufficient window."""

    id: str
    title: str
    when: tuple[Condition, ...]
    finding: str
    """What it means, as a ``str.format`` template over signal names (``{kv_usage_mean:.0%}``)."""
    severity: Severity = Severity.WARNING
    window: WindowRequirement = WindowRequirement()
    knobs: Mapping[ServerType, tuple[KnobMove, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """Per server, the knobs to turn, most effective first."""
    advice: str = ""
    """Actions outside server flags (scale out, routing, client behaviour)."""
    effect: str = ""
    """Expected effect of following the knobs."""
    risk: str = ""
    """What may get worse."""
    servers: frozenset[ServerType] = frozenset(ServerType)
    """Servers the rule applies to."""

    def __repr__(self) -> str:
        return f"Rule(id={self.id!r}, when=[{', '.join(map(str, self.when))}])"


def validate_rules(rules: tuple[Rule, ...]) -> None:
    """Check a rule table: unique ids, known signals and comparators, at least one condition.

    Raises:
        AnalysisError: naming every offending rule and field.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        where = f"rules[{index}] ({rule.id!r})"
        if rule.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(rule.id)
        if not rule.when:
            problems.append(f"{where}: no condition in 'when'")
        for position, condition in enumerate(rule.when):
            if condition.signal not in SIGNALS:
                problems.append(f"{where}.when[{position}]: unknown signal {condition.signal!r}")
            if condition.comparator not in COMPARATORS:
                problems.append(f"{where}.when[{position}]: unknown comparator {condition.comparator!r}")
    if problems:
        raise AnalysisError("invalid rule table: " + "; ".join(problems))


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        id="queue-admission-capped",
        title="Queueing while the KV cache has room (admission-capped)",
        when=(
            Condition("waiting_share", ">=", 0.8),
            Condition("kv_usage_mean", "<", 0.7, per_server={SGLANG: 0.9}),
            Condition("queue_share", ">", 0.2, optional=True),
            Condition("utilization", ">=", 0.9, optional=True),
        ),
        finding=(
            "Requests queue in {waiting_share:.0%} of scrapes (mean {waiting_mean:.1f}) while the KV cache "
            "is only {kv_usage_mean:.0%} used: the concurrency cap, not memory, limits admission."
        ),
        knobs=MappingProxyType(
            {
                VLLM: (KnobMove("max_num_seqs", "raise"), KnobMove("max_num_batched_tokens", "raise")),
                TGI: (
                    KnobMove("max_batch_size", "raise"),
                    KnobMove("max_batch_prefill_tokens", "raise"),
                    KnobMove("waiting_served_ratio", "lower"),
                    KnobMove("max_waiting_tokens", "lower"),
                ),
                SGLANG: (
                    KnobMove("schedule_conservativeness", "set", 0.3),
                    KnobMove("max_running_requests", "raise"),
                ),
            }
        ),
        effect="Lower queue time and TTFT, higher throughput.",
        risk="Inter-token latency rises somewhat as the batch grows.",
    ),
    Rule(
        id="kv-cache-pressure",
        title="KV-cache pressure (capacity-bound)",
        when=(Condition("kv_usage_mean", ">", 0.9), Condition("waiting_share", ">", 0.5)),
        finding=(
            "The KV cache is {kv_usage_mean:.0%} full on average (peak {kv_usage_max:.0%}) and requests "
            "queue in {waiting_share:.0%} of scrapes: memory limits concurrency."
        ),
        severity=Severity.CRITICAL,
        knobs=MappingProxyType(
            {
                VLLM: (KnobMove("gpu_memory_utilization", "raise"), KnobMove("kv_cache_dtype", "set", "fp8")),
                TGI: (KnobMove("kv_cache_dtype", "set", "fp8_e4m3fn"),),
                SGLANG: (
                    KnobMove("mem_fraction_static", "raise"),
                    KnobMove("kv_cache_dtype", "set", "fp8_e5m2"),
                ),
            }
        ),
        advice="Add replicas or tensor parallelism, or shorten the maximum context length.",
        effect="More sequences fit in memory; less queueing.",
        risk="A higher memory fraction risks out-of-memory at start-up; fp8 KV may cost a little accuracy.",
    ),
    Rule(
        id="preemption-thrash",
        title="Preemption thrash",
        when=(Condition("preemption_ratio", ">", 0.01),),
        finding="{preemption_ratio:.1%} of finished requests caused a preemption: work is recomputed.",
        severity=Severity.CRITICAL,
        window=WindowRequirement(min_scrapes=2, min_requests=50),
        knobs=MappingProxyType(
            {
                VLLM: (
                    KnobMove("gpu_memory_utilization", "raise"),
                    KnobMove("max_num_seqs", "lower"),
                    KnobMove("max_num_batched_tokens", "lower"),
                ),
            }
        ),
        advice="Increase tensor or pipeline parallelism if memory stays short.",
        effect="No recompute waste; p99 end-to-end latency drops.",
        risk="Peak concurrency may fall.",
        servers=frozenset({VLLM}),
    ),
    Rule(
        id="retraction-thrash",
        title="Retraction thrash (SGLang)",
        when=(Condition("retractions_per_min", ">", 1.0),),
        finding="Requests were retracted {retractions_per_min:.1f} times a minute: the KV pool runs full.",
        severity=Severity.CRITICAL,
        knobs=MappingProxyType(
            {
                SGLANG: (
                    KnobMove("schedule_conservativeness", "set", 1.3),
                    KnobMove("max_running_requests", "lower"),
                ),
            }
        ),
        effect="Fewer retractions and recomputation.",
        risk="Lower peak concurrency.",
        servers=frozenset({SGLANG}),
    ),
    Rule(
        id="prefill-bound",
        title="Prefill-bound: TTFT over target while queueing is low",
        when=(
            Condition("ttft_p95_vs_slo", ">", 1.0),
            Condition("queue_share", "<", 0.2, optional=True),
        ),
        finding="TTFT p95 is {ttft_p95:.2f} s ({ttft_p95_vs_slo:.1f}x the target) without much queueing.",
        window=WindowRequirement(min_scrapes=2, min_requests=20),
        knobs=MappingProxyType(
            {
                VLLM: (
                    KnobMove("max_num_batched_tokens", "raise"),
                    KnobMove("enable_prefix_caching", "enable"),
                ),
                TGI: (KnobMove("max_batch_prefill_tokens", "raise"),),
                SGLANG: (
                    KnobMove("chunked_prefill_size", "raise"),
                    KnobMove("schedule_policy", "set", "lpm"),
                ),
            }
        ),
        advice="Route requests sharing a prefix to the same replica (prefix-aware routing).",
        effect="TTFT drops.",
        risk="Larger prefill chunks raise the inter-token latency of concurrent decodes.",
    ),
    Rule(
        id="decode-bound",
        title="Decode-bound or prefill interference: inter-token latency over target",
        when=(Condition("itl_p95_vs_slo", ">", 1.0),),
        finding="Inter-token latency p95 is {itl_p95:.3f} s ({itl_p95_vs_slo:.1f}x the target).",
        window=WindowRequirement(min_scrapes=2, min_requests=20),
        knobs=MappingProxyType(
            {
                VLLM: (KnobMove("max_num_batched_tokens", "lower"), KnobMove("max_num_seqs", "lower")),
                TGI: (KnobMove("max_waiting_tokens", "raise"), KnobMove("waiting_served_ratio", "raise")),
                SGLANG: (KnobMove("chunked_prefill_size", "lower"), KnobMove("cuda_graph_max_bs", "raise")),
            }
        ),
        advice="Consider speculative decoding at low or medium batch sizes, or more tensor parallelism.",
        effect="Smoother token streaming.",
        risk="Possibly higher TTFT or lower peak throughput.",
    ),
    Rule(
        id="low-utilisation",
        title="GPU under-used",
        when=(
            Condition("waiting_max", "==", 0.0),
            Condition("kv_usage_mean", "<", 0.3),
            Condition("utilization", "<", 0.3, optional=True),
        ),
        finding=(
            "No request waited and the KV cache is only {kv_usage_mean:.0%} used: the instance has "
            "more capacity than its load needs."
        ),
        severity=Severity.INFO,
        advice=(
            "No server flag fixes missing load: consolidate replicas, raise client concurrency for batch "
            "jobs, or run more replicas with less tensor parallelism."
        ),
        effect="Lower cost; no latency change.",
    ),
    Rule(
        id="spec-decode-ineffective",
        title="Speculative decoding rarely accepted",
        when=(Condition("spec_acceptance", "<", 0.5),),
        finding="Only {spec_acceptance:.0%} of drafted tokens are accepted.",
        window=WindowRequirement(min_scrapes=2),
        knobs=MappingProxyType(
            {
                VLLM: (KnobMove("num_speculative_tokens", "lower"),),
                SGLANG: (KnobMove("speculative_num_draft_tokens", "lower"),),
            }
        ),
        effect="Wasted verification compute recovered.",
        risk="Less speed-up at low batch sizes.",
        servers=frozenset({VLLM, SGLANG}),
    ),
    Rule(
        id="overload-rejections",
        title="Requests rejected or aborted under load",
        when=(Condition("aborted_ratio", ">", 0.01),),
        finding="{aborted_ratio:.1%} of requests were rejected or aborted.",
        severity=Severity.CRITICAL,
        window=WindowRequirement(min_scrapes=2, min_requests=50),
        knobs=MappingProxyType({TGI: (KnobMove("max_concurrent_requests", "raise"),)}),
        advice=(
            "Raise admission limits only with queue and KV headroom; else scale out. Check client timeouts."
        ),
        effect="Fewer rejected requests.",
        risk="More admitted load raises latency for everyone.",
    ),
    Rule(
        id="truncation",
        title="Many responses cut by the length limit",
        when=(Condition("truncated_ratio", ">", 0.2),),
        finding="{truncated_ratio:.0%} of requests stopped at their token limit.",
        severity=Severity.INFO,
        window=WindowRequirement(min_scrapes=2, min_requests=50),
        advice="Review max_tokens / max_model_len with the application owners: a quality issue, not speed.",
        servers=frozenset({VLLM}),
    ),
)
"""The rules from ``research/inference_metrics.md`` section 4, in table order."""
