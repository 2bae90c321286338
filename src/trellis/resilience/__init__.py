"""Resilience: circuit breakers shared across processes (see :mod:`trellis.resilience.breaker`).

Retries live with the node wrapper (:mod:`trellis.nodes._retry`), because their attempt count
must be part of the run's durable state.
"""

from trellis.resilience.breaker import (
    Admission,
    BreakerBoard,
    BreakerPolicy,
    breaker_document,
    breaker_key,
    counts_as_failure,
    trial_deadline,
)

__all__ = [
    "Admission",
    "BreakerBoard",
    "BreakerPolicy",
    "breaker_document",
    "breaker_key",
    "counts_as_failure",
    "trial_deadline",
]
