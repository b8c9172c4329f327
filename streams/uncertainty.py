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
    """NPS ± 100·z·sqrt((a + b - (a - b)²) / n), clipped to [-100, 100]; (None, None) without responses.

    a and b are the promoter and detractor shares; a + b - (a - b)² is the variance of one answer's
    score in {+1, 0, -1}.
    """
    if responses <= 0:
        return None, None
    a, b = promoters / responses, detractors / responses
    nps = 100 * (a - b)
    half = 100 * z * math.sqrt(max(a + b - (a - b) ** 2, 0.0) / responses)
    return max(-100.0, nps - half), min(100.0, nps + half)
