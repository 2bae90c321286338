"""The simulated serving engine: a small fluid-queue model, not an inference server.

One :class:`SimEngine` stands for one instance. Time is simulated: :meth:`SimEngine.advance`
moves it forward in fixed ticks, and everything below is computed per tick.

Workload: a closed population of ``users`` (scaled by the instance's traffic weight), each
sending a request, waiting for the answer, then thinking ``think_seconds`` (exponential) before
the next. A closed population keeps the queue bounded, as real client pools do.

Engine (server-neutral parameters, mapped from each server's flags in ``_flavours``):

* KV capacity in tokens grows with the memory fraction above the weights' share; a running
  request holds ``prompt x (1 - shared prefix share x caching) + output / 2`` tokens, so prefix
  caching frees memory.
* Running requests are capped by the concurrency cap and by KV capacity (divided by the
  schedule conservativeness). A cap above what KV can hold admits too much: the overshoot is
  paid in preemptions (recompute), as vLLM does.
* A decode step costs ``base + per_sequence x running`` seconds, stretched by the share of
  time spent in prefill; prefill chunks (the batched-token budget) stall concurrent decodes.
* Queue time follows Little's law (waiting / completion rate); TTFT = queue + prefill;
  end-to-end = TTFT + output x step. Observations get lognormal noise from a seeded RNG.

Regressions multiply latencies, add aborted requests or shrink KV capacity, optionally only
while the instance runs a configuration other than its original one (a bad change).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

TICK_SECONDS = 0.25
"""Simulated seconds per model step."""

PREFILL_SECONDS_PER_TOKEN = 1e-5
"""Prefill cost (100k tokens/s)."""


@dataclass(frozen=True, slots=True)
class EngineParams:
    """Server-neutral knobs the model responds to."""

    cap: float = 48.0
    """Concurrency cap (vLLM ``max_num_seqs``, SGLang ``max_running_requests``)."""
    mem_fraction: float = 0.9
    """GPU memory fraction for weights + KV (``gpu_memory_utilization``, ``mem_fraction_static``)."""
    prefill_budget: float = 8192.0
    """Prompt tokens per engine step (``max_num_batched_tokens``, ``chunked_prefill_size``)."""
    prefix_caching: bool = True
    conservativeness: float = 1.0
    """KV admission divisor (SGLang ``schedule_conservativeness``); below 1 over-admits."""
    overcommit: float = 1.1
    """How far past KV capacity the scheduler admits (it does not reserve decode growth);
    1.0 for TGI, which reserves every request's tokens up front."""
    kv_scale: float = 1.0
    """KV tokens per byte relative to 16-bit (2.0 for an fp8 KV cache)."""
    reject_above: float | None = None
    """Requests in the system beyond which new ones are rejected (TGI ``max_concurrent_requests``)."""


@dataclass(frozen=True, slots=True)
class Workload:
    users: float = 96.0
    """Concurrent clients at traffic weight 1 / fleet size."""
    think_seconds: float = 1.0
    prompt_tokens: float = 1000.0
    output_tokens: float = 200.0
    shared_prefix: float = 0.5
    """Share of each prompt that is a prefix shared with other requests."""


@dataclass(frozen=True, slots=True)
class Regression:
    """An injected fault."""

    latency_factor: float = 1.0
    """Multiplies step time and TTFT."""
    error_rate: float = 0.0
    """Share of finished requests that end aborted."""
    kv_capacity_factor: float = 1.0
    """Multiplies KV capacity (a memory leak)."""
    only_when_changed: bool = True
    """Active only while the configuration differs from the original."""

    @property
    def inert(self) -> bool:
        return self.latency_factor == 1.0 and self.error_rate == 0.0 and self.kv_capacity_factor == 1.0


class Accumulator:
    """A cumulative histogram (fixed bounds) with ``observe(value, weight)``."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)
        self.count = 0.0
        self.sum = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += weight
        self.count += weight
        self.sum += value * weight

    def cumulative(self) -> list[tuple[float, float]]:
        result: list[tuple[float, float]] = []
        running = 0.0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


@dataclass
class EngineState:
    """Everything that changes with simulated time (exported as metrics)."""

    now: float = 0.0
    running: float = 0.0
    waiting: float = 0.0
    thinking: float = 0.0
    kv_usage: float = 0.0
    kv_capacity_tokens: float = 0.0
    step_seconds: float = 0.0
    retracted_last_tick: float = 0.0
    throughput_tokens: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)


class SimEngine:
    """One simulated instance. Deterministic for a given seed and sequence of calls."""

    def __init__(
        self,
        params: EngineParams,
        *,
        workload: Workload | None = None,
        weight: float = 1.0,
        fleet_size: int = 1,
        seed: int = 0,
        latency_bounds: dict[str, tuple[float, ...]],
    ) -> None:
        self.params = params
        self.workload = workload or Workload()
        self.weight = weight
        self.fleet_size = fleet_size
        self.regression = Regression()
        self.changed = False
        self._rng = random.Random(seed)
        self.state = EngineState(thinking=self._users())
        self.histograms = {name: Accumulator(bounds) for name, bounds in latency_bounds.items()}
        for name in (
            "prompt_tokens",
            "generation_tokens",
            "prefix_queries",
            "prefix_hits",
            "finished_ok",
            "finished_length",
            "aborted",
            "rejected",
            "preemptions",
            "requests",
        ):
            self.state.counters[name] = 0.0
        self._carry = {"arrivals": 0.0, "completions": 0.0}
        self._pending = 0.0

    def _users(self) -> float:
        return self.workload.users * self.weight * self.fleet_size

    def _active_regression(self) -> Regression:
        if self.regression.only_when_changed and not self.changed:
            return Regression()
        return self.regression

    def set_params(self, params: EngineParams, *, changed: bool) -> None:
        self.params = params
        self.changed = changed

    def set_weight(self, weight: float) -> None:
        """Change the traffic share: the client population follows over the next ticks."""
        self.weight = weight

    def inject(self, regression: Regression) -> None:
        self.regression = regression

    def _noise(self, sigma: float) -> float:
        return math.exp(self._rng.gauss(-sigma * sigma / 2, sigma))

    def _whole(self, mean: float, key: str) -> int:
        """Poisson-ish integer from a fluid mean, carrying the fraction to the next tick."""
        total = mean + self._carry[key]
        whole = int(total)
        self._carry[key] = total - whole
        return whole

    def advance(self, seconds: float) -> None:
        """Run the model for ``seconds`` of simulated time."""
        self._pending += max(seconds, 0.0)
        # A small epsilon keeps advance(0.25) from losing a tick to float rounding.
        while self._pending >= TICK_SECONDS - 1e-9:
            self._pending -= TICK_SECONDS
            self._tick(TICK_SECONDS)

    def _tick(self, dt: float) -> None:
        p, w, s, c = self.params, self.workload, self.state, self.state.counters
        fault = self._active_regression()
        caching = 1.0 if p.prefix_caching else 0.0
        # Memory: weights take half the GPU; the rest of the fraction is KV.
        kv_tokens = 400_000.0 * max(p.mem_fraction - 0.5, 0.02) * p.kv_scale * fault.kv_capacity_factor
        footprint = w.prompt_tokens * (1 - w.shared_prefix * 0.9 * caching) + w.output_tokens / 2
        kv_limit = kv_tokens / footprint
        admit_limit = max(min(p.cap, kv_limit * p.overcommit / p.conservativeness), 1.0)

        # The client population follows the traffic weight: users join the thinking pool, and
        # leave it (never mid-request) when the weight drops.
        population = s.thinking + s.waiting + s.running
        s.thinking = max(s.thinking + self._users() - population, 0.0)

        # Arrivals from the thinking pool; TGI-style rejection when the system is full.
        arrivals = self._whole(s.thinking * dt / w.think_seconds, "arrivals")
        arrivals = min(arrivals, int(s.thinking))
        s.thinking -= arrivals
        if p.reject_above is not None:
            room = max(int(p.reject_above - s.running - s.waiting), 0)
            rejected = max(arrivals - room, 0)
            arrivals -= rejected
            s.thinking += rejected
            c["rejected"] += rejected
        s.waiting += arrivals
        c["requests"] += arrivals

        admitted = min(s.waiting, max(math.floor(admit_limit) - s.running, 0.0))
        s.waiting -= admitted
        s.running += admitted
        prompt_uncached = w.prompt_tokens * (1 - w.shared_prefix * 0.9 * caching)

        # Step time: decode cost grows with the batch; prefill work steals time from decode.
        admit_rate = admitted / dt
        prefill_share = min(admit_rate * prompt_uncached * PREFILL_SECONDS_PER_TOKEN, 0.9)
        step = (0.008 + 0.00025 * s.running) / (1 - prefill_share) * fault.latency_factor
        chunks = max(math.ceil(prompt_uncached / p.prefill_budget), 1)
        stall = (
            min(p.prefill_budget, prompt_uncached * max(admit_rate * step, 1.0)) * PREFILL_SECONDS_PER_TOKEN
        )
        stall_share = min(admit_rate * chunks * step, 0.5)

        completions = min(
            self._whole(s.running * dt / (w.output_tokens * step), "completions"), int(s.running)
        )
        # Over-admission beyond KV capacity is paid in preemptions (recompute).
        overshoot = max(s.running - kv_limit, 0.0) / max(kv_limit, 1.0)
        preempted = completions * min(overshoot * 2.0, 1.0)
        s.retracted_last_tick = preempted
        c["preemptions"] += preempted

        throughput = completions / dt if completions else max(s.running / (w.output_tokens * step), 1e-6)
        queue_wait = s.waiting / throughput if s.waiting > 0 else 0.0
        prefill_seconds = chunks * step + prompt_uncached * PREFILL_SECONDS_PER_TOKEN
        ttft = (queue_wait + prefill_seconds) * fault.latency_factor
        h = self.histograms
        for _ in range(completions):
            request_ttft = ttft * self._noise(0.25)
            itl = step * self._noise(0.1)
            request_queue = queue_wait * self._noise(0.25)
            h["ttft"].observe(request_ttft)
            h["queue_time"].observe(request_queue)
            h["prefill_time"].observe(prefill_seconds * self._noise(0.2))
            h["itl"].observe(itl, w.output_tokens * (1 - stall_share))
            h["itl"].observe(itl + stall, w.output_tokens * stall_share)
            h["e2e"].observe(request_ttft + w.output_tokens * itl * (1 + stall_share * stall / itl))
            h["tpot"].observe(itl * (1 + stall_share * stall / itl))
        aborted = completions * fault.error_rate
        s.running -= completions
        s.thinking += completions
        c["aborted"] += aborted
        # One request in ten runs into its max_tokens limit.
        c["finished_length"] += (completions - aborted) * 0.1
        c["finished_ok"] += (completions - aborted) * 0.9
        c["prompt_tokens"] += admitted * w.prompt_tokens
        c["generation_tokens"] += completions * w.output_tokens
        c["prefix_queries"] += admitted * w.prompt_tokens
        c["prefix_hits"] += admitted * w.prompt_tokens * w.shared_prefix * 0.9 * caching
        s.kv_usage = min(s.running * footprint / kv_tokens, 1.0)
        s.kv_capacity_tokens = kv_tokens
        s.step_seconds = step
        s.throughput_tokens = completions * w.output_tokens / dt
        s.now += dt
