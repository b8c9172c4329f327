"""95 % intervals of ratio KPIs (docs/definitions.md, "Uncertainty"). Pure functions."""

from __future__ import annotations

import math

#: The 97.5 % quantile of the standard normal distribution: a two-sided 95 % interval.
Z = 1.959963984540054

Interval = tuple[float, float] | tuple[None, None]


def wilson(successes: int, trials: int, z: float = Z) -> Interval:
    """Wilson score interval of a proportion; (None, None) when there are no trials or k > n.

    Preferred over the normal (Wald) interval: it stays inside [0, 1] and keeps close to its nominal
    coverage for small samples and proportions near 0 or 1, where alerts on small segments live.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        return None, None
    n = trials
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def nps_interval(promoters: int, detractors: int, responses: int, z: float = Z) -> Interval:
    """Adjusted Wald interval of NPS (Rocks 2016), clipped to [-100, 100]; (None, None) without responses.

    Three pseudo-answers are added, 3/4 of one each to promoters and detractors (and 3/2 to passives):
    n' = n + 3, a = (promoters + 3/4) / n', b = (detractors + 3/4) / n', NPS' = 100 (a - b) ±
    100·z·sqrt((a + b - (a - b)²) / n'). a + b - (a - b)² is the variance of one answer's score in
    {+1, 0, -1}. The plain normal approximation (the same with n, promoters and detractors as counted) gives
    five identical answers a variance, and an interval width, of 0; with the pseudo-answers no sample is
    certain, and the 95 % interval covers the true NPS at least 91 % of the time from n = 5 on (exact
    coverage over a grid of true shares: tests/unit/test_uncertainty_coverage.py, docs/alerts.md).
    """
    if responses <= 0:
        return None, None
    n = responses + 3
    a, b = (promoters + 0.75) / n, (detractors + 0.75) / n
    centre = 100 * (a - b)
    half = 100 * z * math.sqrt(max(a + b - (a - b) ** 2, 0.0) / n)
    return max(-100.0, centre - half), min(100.0, centre + half)
