"""Rank and proportion tests for canary judgment, written out rather than imported.

Why not SciPy: the judgment needs two tests (Mann-Whitney U with tie correction and a normal
approximation, and a two-proportion z test), both a few lines over :func:`math.erfc`, while
SciPy would add a ~40 MB compiled dependency to every Trellis install for them. The sample
sizes here are large (hundreds to millions of observations per window), where the normal
approximation is the method SciPy itself uses by default; exact small-sample p-values are
not needed because the judge refuses to decide below a minimum sample size anyway.

Latency data arrive as histogram buckets, so the rank test works on *grouped* data: every
observation in one bucket shares a value (the bucket), i.e. the whole bucket is one tie
group. Mid-ranks and the tie-corrected variance make that exact for the ordinal information
the buckets carry, in O(buckets) instead of O(observations).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Alternative = Literal["greater", "less", "two-sided"]


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class RankTest:
    """Result of a Mann-Whitney U test of ``x`` against ``y``."""

    u: float
    """U statistic of ``x``: pairs where x > y, ties counting one half."""
    n_x: float
    n_y: float
    variance: float
    """Tie-corrected variance of U under the null hypothesis."""
    z: float
    """Standardised U (continuity-corrected)."""
    p_value: float
    alternative: Alternative
    cles: float
    """Common-language effect size: P(x > y) + P(x = y) / 2; 0.5 means no shift."""


def mann_whitney_grouped(
    groups: Sequence[tuple[float, float]], *, alternative: Alternative = "greater"
) -> RankTest:
    """Mann-Whitney U over tie groups in ascending value order.

    Args:
        groups: ``(count_x, count_y)`` per distinct value (or histogram bucket), sorted by
            that value ascending. Counts may be floats (histogram deltas) but must be >= 0.
        alternative: ``greater`` tests whether ``x`` tends to be larger than ``y``.

    Raises:
        ValueError: a negative count, or an empty side.
    """
    if any(cx < 0 or cy < 0 for cx, cy in groups):
        raise ValueError("group counts must be >= 0")
    n_x = sum(cx for cx, _ in groups)
    n_y = sum(cy for _, cy in groups)
    if n_x <= 0 or n_y <= 0:
        raise ValueError(f"both samples need observations (n_x={n_x:g}, n_y={n_y:g})")
    n = n_x + n_y
    rank_sum_x = 0.0
    tie_term = 0.0
    below = 0.0
    for cx, cy in groups:
        size = cx + cy
        if size == 0:
            continue
        mid_rank = below + (size + 1.0) / 2.0
        rank_sum_x += cx * mid_rank
        tie_term += size**3 - size
        below += size
    u = rank_sum_x - n_x * (n_x + 1.0) / 2.0
    mean = n_x * n_y / 2.0
    variance = n_x * n_y / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0))) if n > 1 else 0.0
    cles = u / (n_x * n_y)
    if variance <= 0:
        # Every observation tied: the data carry no evidence of a shift either way.
        return RankTest(u, n_x, n_y, 0.0, 0.0, 1.0, alternative, cles)
    sd = math.sqrt(variance)
    if alternative == "greater":
        z = (u - mean - 0.5) / sd
        p = normal_sf(z)
    elif alternative == "less":
        z = (u - mean + 0.5) / sd
        p = 1.0 - normal_sf(z)
    else:
        z = (abs(u - mean) - 0.5) / sd
        p = min(1.0, 2.0 * normal_sf(z))
        z = math.copysign(z, u - mean)
    return RankTest(u, n_x, n_y, variance, z, p, alternative, cles)


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], *, alternative: Alternative = "greater"
) -> RankTest:
    """Mann-Whitney U on raw samples (equal values form tie groups)."""
    count_x, count_y = Counter(x), Counter(y)
    groups = [(float(count_x[v]), float(count_y[v])) for v in sorted(set(count_x) | set(count_y))]
    return mann_whitney_grouped(groups, alternative=alternative)


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """One-sided pooled two-proportion z test: is ``x``'s rate above ``y``'s?"""

    rate_x: float
    rate_y: float
    z: float
    p_value: float


def two_proportion_test(events_x: float, n_x: float, events_y: float, n_y: float) -> ProportionTest:
    """Test H0 ``p_x <= p_y`` against ``p_x > p_y`` with the pooled normal approximation.

    Raises:
        ValueError: an empty sample or more events than trials.
    """
    if n_x <= 0 or n_y <= 0:
        raise ValueError(f"both samples need trials (n_x={n_x:g}, n_y={n_y:g})")
    if not (0 <= events_x <= n_x and 0 <= events_y <= n_y):
        raise ValueError("events must be between 0 and the number of trials")
    rate_x, rate_y = events_x / n_x, events_y / n_y
    pooled = (events_x + events_y) / (n_x + n_y)
    variance = pooled * (1.0 - pooled) * (1.0 / n_x + 1.0 / n_y)
    if variance <= 0:
        return ProportionTest(rate_x, rate_y, 0.0, 1.0)
    z = (rate_x - rate_y) / math.sqrt(variance)
    return ProportionTest(rate_x, rate_y, z, normal_sf(z))
