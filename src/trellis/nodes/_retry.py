"""Retry classification and backoff delays.

Trellis runs a node's attempt loop itself (see :mod:`trellis.nodes._wrapper`) instead of
LangGraph's ``RetryPolicy`` loop, for three reasons measured against langgraph 1.2.22:
its jitter is a fixed 0-1 s add-on rather than a draw from ``0..cap``, its attempt counter
lives in memory (a run resumed after a crash would start again at attempt 1), and its
between-attempt sleep is invisible to the event stream. The policy fields keep LangGraph's
names and meanings (``max_attempts`` counts attempts, first included).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trellis.dsl.models import RetrySpec
from trellis.errors import NON_RETRYABLE, TRANSIENT, WorkflowError


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """A resolved retry policy for one node."""

    max_attempts: int = 1
    """Total attempts, first included."""
    initial_interval: float = 1.0
    """Delay cap before the second attempt, seconds."""
    backoff_rate: float = 2.0
    max_interval: float = 60.0
    """Upper bound of any one delay, seconds."""
    jitter: bool = True
    """Full jitter: the delay is drawn uniformly from ``0..cap``."""
    on: frozenset[str] | None = None
    """Error names retried; ``None`` = transient errors only; ``*`` = any retryable error."""

    @classmethod
    def from_spec(cls, spec: RetrySpec | None) -> RetryPlan:
        if spec is None:
            return cls()
        return cls(
            max_attempts=max(spec.max_attempts, 1),
            initial_interval=spec.initial_interval,
            backoff_rate=spec.backoff_rate,
            max_interval=spec.max_interval,
            jitter=spec.jitter == "full",
            on=frozenset(spec.on) if spec.on is not None else None,
        )

    def should_retry(self, error: WorkflowError, attempt: int) -> bool:
        """Whether ``attempt`` (1-based, just failed with ``error``) is followed by another."""
        if attempt >= self.max_attempts or not error.retryable or error.name in NON_RETRYABLE:
            return False
        if self.on is None:
            return error.name in TRANSIENT
        return "*" in self.on or error.name in self.on

    def cap(self, attempt: int) -> float:
        """Largest delay after failed ``attempt`` (1-based): exponential, bounded by ``max_interval``."""
        return min(self.max_interval, self.initial_interval * self.backoff_rate ** (attempt - 1))

    def delay(self, attempt: int, error: WorkflowError, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt``; honours the remote's ``Retry-After``."""
        cap = self.cap(attempt)
        drawn = (rng or random).uniform(0.0, cap) if self.jitter else cap
        if error.retry_after is not None:
            # The remote knows when it will have capacity again; waiting less only burns an attempt.
            return max(drawn, error.retry_after)
        return drawn
