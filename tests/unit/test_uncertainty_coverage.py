"""Coverage of the 95 % intervals (streams/uncertainty.py): a seeded Monte Carlo simulation.

For known true values, draw many random samples, compute each sample's interval, and count how often it
contains the truth. A 95 % interval should do so about 95 % of the time. Two sources of spread around 0.95:

- Monte Carlo noise: with R = 2,000 samples the standard error of an empirical coverage near 0.95 is
  sqrt(0.95 * 0.05 / 2000) = 0.0049.
- The intervals' own (exact) coverage is not exactly 0.95. Wilson's coverage oscillates with n and p because
  k is discrete; for the cases below it lies in 0.935..0.971 (computed exactly in
  `test_simulation_agrees_with_the_exact_coverage`). The NPS interval is a normal (Wald) approximation of
  a mean of scores in {-1, 0, +1}: it under-covers slightly at small n, 0.929..0.941 at n = 50 for the
  share pairs below, 0.945..0.947 at n = 200.

Bounds are therefore exact range ± about 2 standard errors of the simulation: Wilson 0.925..0.980; NPS
0.915..0.960 at n = 50 and 0.930..0.965 at n = 200. The seed makes the test deterministic; it also checks
that every simulated coverage is within 4 standard errors of the exact one (the simulation draws what the
formula assumes) and that the pooled coverage over all cases is close to 0.95.
"""

from __future__ import annotations

import math
import random

import pytest

from kpimon.streams.uncertainty import nps_interval, wilson

SAMPLES = 2_000
SEED = 20_240_601
SE = math.sqrt(0.95 * 0.05 / SAMPLES)

#: True (promoter share, detractor share) pairs; NPS = 100 (a - b).
NPS_SHARES = ((0.5, 0.2), (0.3, 0.3), (0.6, 0.1), (0.2, 0.5), (0.1, 0.7), (0.7, 0.05))
#: True CSAT proportions (satisfied / answers).
PROPORTIONS = (0.2, 0.5, 0.75, 0.9)
SIZES = (50, 200)
NPS_BOUNDS = {50: (0.915, 0.960), 200: (0.930, 0.965)}
WILSON_BOUNDS = (0.925, 0.980)
#: Where the exact coverage of the cases above lies (checked), the bounds above being these ± 2 SE or so.
NPS_EXACT = {50: (0.925, 0.950), 200: (0.940, 0.955)}
WILSON_EXACT = (0.930, 0.975)


def simulate_nps(a: float, b: float, n: int, rng: random.Random) -> float:
    """Share of SAMPLES random samples of n answers whose NPS interval contains 100 (a - b)."""
    truth = 100 * (a - b)
    hits = 0
    for _ in range(SAMPLES):
        promoters = detractors = 0
        for _ in range(n):
            r = rng.random()
            if r < a:
                promoters += 1
            elif r < a + b:
                detractors += 1
        low, high = nps_interval(promoters, detractors, n)
        assert low is not None and high is not None
        hits += low <= truth <= high
    return hits / SAMPLES


def simulate_wilson(p: float, n: int, rng: random.Random) -> float:
    """Share of SAMPLES random samples of n answers whose Wilson interval contains p."""
    hits = 0
    for _ in range(SAMPLES):
        k = sum(rng.random() < p for _ in range(n))
        low, high = wilson(k, n)
        assert low is not None and high is not None
        hits += low <= p <= high
    return hits / SAMPLES


def exact_nps(a: float, b: float, n: int) -> float:
    """Exact coverage: the trinomial probability of every (promoters, detractors) whose interval covers."""
    truth, c = 100 * (a - b), 1 - a - b
    total = 0.0
    for i in range(n + 1):
        for j in range(n + 1 - i):
            low, high = nps_interval(i, j, n)
            assert low is not None and high is not None
            if low <= truth <= high:
                log_p = (
                    math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(j + 1) - math.lgamma(n - i - j + 1)
                )
                total += math.exp(log_p + i * math.log(a) + j * math.log(b) + (n - i - j) * math.log(c))
    return total


def exact_wilson(p: float, n: int) -> float:
    """Exact coverage: the binomial probability of every k whose Wilson interval covers p."""
    total = 0.0
    for k in range(n + 1):
        low, high = wilson(k, n)
        assert low is not None and high is not None
        if low <= p <= high:
            total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    return total


@pytest.fixture(scope="module")
def coverage() -> dict[tuple[str, float, float, int], float]:
    """(kind, x, y, n) -> simulated coverage, all from one seeded generator (deterministic)."""
    rng = random.Random(SEED)
    out: dict[tuple[str, float, float, int], float] = {}
    for n in SIZES:
        for a, b in NPS_SHARES:
            out[("nps", a, b, n)] = simulate_nps(a, b, n, rng)
        for p in PROPORTIONS:
            out[("wilson", p, 0.0, n)] = simulate_wilson(p, n, rng)
    return out


def test_nps_interval_covers_the_true_nps_about_95_percent(
    coverage: dict[tuple[str, float, float, int], float],
) -> None:
    for (kind, a, b, n), value in coverage.items():
        if kind == "nps":
            low, high = NPS_BOUNDS[n]
            assert low <= value <= high, f"NPS a={a} b={b} n={n}: coverage {value}"


def test_wilson_interval_covers_the_true_proportion_about_95_percent(
    coverage: dict[tuple[str, float, float, int], float],
) -> None:
    for (kind, p, _, n), value in coverage.items():
        if kind == "wilson":
            assert WILSON_BOUNDS[0] <= value <= WILSON_BOUNDS[1], f"CSAT p={p} n={n}: coverage {value}"


def test_pooled_coverage_is_close_to_95_percent(coverage: dict[tuple[str, float, float, int], float]) -> None:
    for kind, (low, high) in (("nps", (0.935, 0.955)), ("wilson", (0.94, 0.96))):
        values = [v for key, v in coverage.items() if key[0] == kind]
        assert low <= sum(values) / len(values) <= high, (kind, values)


def test_simulation_agrees_with_the_exact_coverage(
    coverage: dict[tuple[str, float, float, int], float],
) -> None:
    for (kind, x, y, n), value in coverage.items():
        exact = exact_nps(x, y, n) if kind == "nps" else exact_wilson(x, n)
        if kind == "nps":
            assert NPS_EXACT[n][0] <= exact <= NPS_EXACT[n][1], (x, y, n, exact)
        else:
            assert WILSON_EXACT[0] <= exact <= WILSON_EXACT[1], (x, n, exact)
        assert abs(value - exact) <= 4 * SE, f"{kind} {x} {y} n={n}: simulated {value}, exact {exact}"
