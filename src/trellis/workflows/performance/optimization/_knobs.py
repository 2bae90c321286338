"""The knob catalogue: every server flag the rules may turn, with how to turn it.

A :class:`Knob` knows its command-line flag, the documented default, where a running server
reveals its current value (vLLM's ``cache_config_info`` labels, early SGLang limit gauges), and
the size of one step up or down. Defaults marked ``None`` are derived by the server at start-up
(from free memory or the model); for those ``typical`` is the base a proposal starts from when
nobody told us the current value, and the recommendation says so.
Sources: vLLM ``docs/configuration/optimization.md``, TGI ``launcher.md``, SGLang
``hyperparameter_tuning.md`` and ``server_arguments.md`` (see ``research/inference_metrics.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from trellis.workflows.performance.collectors import ServerType

Value = str | float | int | bool

VLLM, TGI, SGLANG = ServerType.VLLM, ServerType.TGI, ServerType.SGLANG


@dataclass(frozen=True, slots=True)
class Knob:
    """One tunable server flag."""

    id: str
    """Catalogue id, also the key in configuration mappings (``max_num_seqs``)."""
    server: ServerType
    flag: str
    """Command-line flag (``--max-num-seqs``)."""
    kind: Literal["int", "float", "bool", "str"]
    default: Value | None
    """Documented default; ``None`` when the server derives it at start-up."""
    typical: Value | None = None
    """Base for proposals when the current value and the default are both unknown."""
    factor: float | None = None
    """Multiplicative step for raise/lower (``x factor`` / ``/ factor``)."""
    step: float | None = None
    """Additive step for raise/lower (used when ``factor`` is ``None``)."""
    minimum: float | None = None
    maximum: float | None = None
    exported_as: str | None = None
    """Key under which the server's own metrics export the current value, if they do."""
    note: str = ""

    def coerce(self, raw: object) -> Value:
        """``raw`` (often a label string) as this knob's type.

        Raises:
            ValueError: ``raw`` does not read as the knob's type.
        """
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{self.id}: {raw!r} is not a boolean")
        if self.kind == "int":
            return int(float(str(raw)))
        if self.kind == "float":
            return float(str(raw))
        return str(raw)


def _knobs(*items: Knob) -> Mapping[tuple[ServerType, str], Knob]:
    return {(k.server, k.id): k for k in items}


KNOBS: Mapping[tuple[ServerType, str], Knob] = _knobs(
    # vLLM (V1 engine)
    Knob(
        "max_num_seqs",
        VLLM,
        "--max-num-seqs",
        "int",
        256,
        factor=1.5,
        minimum=8,
        maximum=2048,
        note="default depends on version and hardware",
    ),
    Knob(
        "max_num_batched_tokens",
        VLLM,
        "--max-num-batched-tokens",
        "int",
        None,
        typical=8192,
        factor=2.0,
        minimum=2048,
        maximum=65536,
        note="doc: 2048 favours ITL, > 8192 favours throughput",
    ),
    Knob(
        "gpu_memory_utilization",
        VLLM,
        "--gpu-memory-utilization",
        "float",
        0.9,
        step=0.05,
        minimum=0.5,
        maximum=0.95,
        exported_as="gpu_memory_utilization",
    ),
    Knob(
        "enable_prefix_caching",
        VLLM,
        "--enable-prefix-caching",
        "bool",
        True,
        exported_as="enable_prefix_caching",
        note="on by default in the V1 engine",
    ),
    Knob("kv_cache_dtype", VLLM, "--kv-cache-dtype", "str", "auto", exported_as="cache_dtype"),
    Knob(
        "num_speculative_tokens",
        VLLM,
        "--speculative-config num_speculative_tokens",
        "int",
        None,
        typical=5,
        step=2,
        minimum=1,
        maximum=16,
    ),
    # TGI
    Knob(
        "max_batch_prefill_tokens",
        TGI,
        "--max-batch-prefill-tokens",
        "int",
        None,
        typical=4096,
        factor=2.0,
        minimum=256,
        maximum=65536,
        note="default: max_input_tokens + 50",
    ),
    Knob(
        "max_batch_size",
        TGI,
        "--max-batch-size",
        "int",
        None,
        typical=64,
        factor=1.5,
        minimum=1,
        maximum=4096,
        note="unset by default: the token budget alone limits the batch",
    ),
    Knob(
        "waiting_served_ratio",
        TGI,
        "--waiting-served-ratio",
        "float",
        0.3,
        factor=2.0,
        minimum=0.05,
        maximum=2.0,
    ),
    Knob("max_waiting_tokens", TGI, "--max-waiting-tokens", "int", 20, factor=2.0, minimum=1, maximum=200),
    Knob(
        "max_concurrent_requests",
        TGI,
        "--max-concurrent-requests",
        "int",
        128,
        factor=1.5,
        minimum=8,
        maximum=4096,
    ),
    Knob("kv_cache_dtype", TGI, "--kv-cache-dtype", "str", None, typical="auto"),
    Knob(
        "cuda_memory_fraction",
        TGI,
        "--cuda-memory-fraction",
        "float",
        1.0,
        step=0.05,
        minimum=0.5,
        maximum=1.0,
    ),
    # SGLang
    Knob(
        "schedule_conservativeness",
        SGLANG,
        "--schedule-conservativeness",
        "float",
        1.0,
        factor=1.3,
        minimum=0.1,
        maximum=3.0,
    ),
    Knob(
        "max_running_requests",
        SGLANG,
        "--max-running-requests",
        "int",
        None,
        typical=256,
        factor=1.5,
        minimum=8,
        maximum=8192,
        exported_as="max_running_requests",
    ),
    Knob(
        "mem_fraction_static",
        SGLANG,
        "--mem-fraction-static",
        "float",
        None,
        typical=0.85,
        step=0.03,
        minimum=0.5,
        maximum=0.95,
        note="doc: keep 5-8 GB of GPU memory free",
    ),
    Knob("kv_cache_dtype", SGLANG, "--kv-cache-dtype", "str", "auto"),
    Knob(
        "chunked_prefill_size",
        SGLANG,
        "--chunked-prefill-size",
        "int",
        None,
        typical=8192,
        factor=2.0,
        minimum=1024,
        maximum=32768,
    ),
    Knob("schedule_policy", SGLANG, "--schedule-policy", "str", "fcfs"),
    Knob(
        "cuda_graph_max_bs",
        SGLANG,
        "--cuda-graph-max-bs",
        "int",
        None,
        typical=160,
        factor=2.0,
        minimum=8,
        maximum=1024,
    ),
    Knob(
        "speculative_num_draft_tokens",
        SGLANG,
        "--speculative-num-draft-tokens",
        "int",
        None,
        typical=4,
        step=1,
        minimum=1,
        maximum=16,
    ),
)
"""The catalogue, keyed by ``(server, knob id)``."""


def knob(server: ServerType, knob_id: str) -> Knob | None:
    """The catalogue entry, or ``None`` when the server has no such knob."""
    return KNOBS.get((server, knob_id))
