"""Coverage of the 95 % intervals (kpimon/streams/uncertainty.py), computed exactly by enumeration.

For a true promoter share a and detractor share b, n answers give (promoters, detractors) = (i, j) with the
trinomial probability n! / (i! j! (n-i-j)!) a^i b^j (1-a-b)^(n-i-j). The exact coverage of an interval
method is the total probability of the outcomes whose interval contains the true NPS 100 (a - b). A 95 %
interval should cover about 95 % of the time; what matters for alerts on small segments is that it does not
cover much less (a too-narrow interval on a small sample pages on noise).

The grid is every (a, b) with a, b in GRID (0.05 to 0.9) and passives 1 - a - b >= 0.05; n is in SIZES.
Outcomes further than 8 standard deviations (+ 10) from the mean are skipped (their total probability is below
1e-12; the test checks that the enumerated probability adds up to 1 within 1e-9). Wilson's interval of a
proportion is enumerated the same way over the binomial outcomes, for p in GRID. docs/alerts.md shows the
table this module computes (`coverage_table`); a test keeps the two equal.

A seeded simulation of a few grid points checks the enumeration itself: drawing answers at random must give
the same coverage within 4 standard errors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import cache

import pytest

from kpimon.streams.uncertainty import Interval, Z, nps_interval, wilson
from scripts.generate import ROOT

SIZES = (5, 10, 20, 50, 100, 300, 1000)
GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: (promoter share, detractor share) pairs of the grid: all three shares (passives being the rest) between
#: 0.05 and 0.9. Without any passives (a + b = 1) the adjusted Wald interval covers less at n = 10: 89.1 %
#: at a = b = 0.5 (docs/alerts.md); every answer is then +1 or -1, which real surveys do not produce.
NPS_GRID = tuple((a, b) for a in GRID for b in GRID if a + b <= 0.95 + 1e-9)
#: Outcomes within this many standard deviations of the mean are enumerated.
SPREAD = 8.0

NpsMethod = Callable[[int, int, int], Interval]


def plain_wald(promoters: int, detractors: int, responses: int) -> Interval:
    """The plain normal approximation kpimon used before: NPS ± 100·z·sqrt((a + b - (a - b)²) / n)."""
    a, b = promoters / responses, detractors / responses
    half = 100 * Z * math.sqrt(max(a + b - (a - b) ** 2, 0.0) / responses)
    return max(-100.0, 100 * (a - b) - half), min(100.0, 100 * (a - b) + half)


NPS_METHODS: dict[str, NpsMethod] = {"adjusted Wald": nps_interval, "plain normal approximation": plain_wald}


def _window(n: int, p: float) -> range:
    """The counts of a binomial(n, p) within SPREAD standard deviations of its mean."""
    # + 10: a skewed binomial of small n (p = 0.05, n = 10) has a longer tail than the normal's 8 sd.
    mean, reach = n * p, SPREAD * math.sqrt(n * p * (1 - p)) + 10
    return range(max(0, math.floor(mean - reach)), min(n, math.ceil(mean + reach)) + 1)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


@cache
def nps_coverage(method: str, a: float, b: float, n: int) -> tuple[float, float]:
    """(exact coverage, total enumerated probability) of `method` at true shares (a, b) and n answers."""
    interval = NPS_METHODS[method]
    truth, c = 100 * (a - b), 1 - a - b
    if c < 1e-9:
        c = 0.0
    lgamma = [math.lgamma(k + 1) for k in range(n + 1)]
    log_a, log_b, log_c = _log(a), _log(b), _log(c)
    covered = total = 0.0
    for i in _window(n, a):
        # Given i promoters, the detractors are binomial(n - i, b / (1 - a)).
        rest = n - i
        js = _window(rest, b / (1 - a)) if c > 0 else range(rest, rest + 1)
        for j in js:
            k = rest - j
            log_p = lgamma[n] - lgamma[i] - lgamma[j] - lgamma[k] + i * log_a + j * log_b
            log_p += k * log_c if k else 0.0
            p = math.exp(log_p)
            total += p
            low, high = interval(i, j, n)
            assert low is not None and high is not None
            if low <= truth <= high:
                covered += p
    return covered, total


@cache
def wilson_coverage(p: float, n: int) -> float:
    """Exact coverage of Wilson's interval of k successes in n at true proportion p."""
    covered = 0.0
    for k in range(n + 1):
        low, high = wilson(k, n)
        assert low is not None and high is not None
        if low <= p <= high:
            covered += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    return covered


def summary(values: list[float]) -> tuple[float, float]:
    """(minimum, mean)."""
    return min(values), sum(values) / len(values)


def coverage_table() -> str:
    """The Markdown table of docs/alerts.md: minimum and mean exact coverage over the grid, per n."""
    lines = [
        "| n | adjusted Wald (NPS): min | mean | plain normal (NPS): min | mean"
        " | Wilson (proportion): min | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        cells = [str(n)]
        for method in NPS_METHODS:
            low, mean = summary([nps_coverage(method, a, b, n)[0] for a, b in NPS_GRID])
            cells += [f"{100 * low:.1f} %", f"{100 * mean:.1f} %"]
        low, mean = summary([wilson_coverage(p, n) for p in GRID])
        cells += [f"{100 * low:.1f} %", f"{100 * mean:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_the_enumeration_adds_up_to_one() -> None:
    for n in SIZES:
        for a, b in NPS_GRID:
            assert nps_coverage("adjusted Wald", a, b, n)[1] == pytest.approx(1.0, abs=1e-9), (a, b, n)


@pytest.mark.parametrize("n", SIZES)
def test_adjusted_wald_covers_at_least_90_percent_everywhere_and_94_on_average(n: int) -> None:
    values = {(a, b): nps_coverage("adjusted Wald", a, b, n)[0] for a, b in NPS_GRID}
    worst = min(values, key=values.__getitem__)
    low, mean = summary(list(values.values()))
    print(f"n={n}: adjusted Wald coverage min {low:.4f} at (a, b) = {worst}, mean {mean:.4f}")
    assert low >= 0.90, f"n={n}: coverage {low:.4f} at (a, b) = {worst}"
    assert mean >= 0.94, f"n={n}: mean coverage {mean:.4f}"


def test_the_plain_normal_approximation_fails_at_small_samples() -> None:
    """What the adjusted Wald interval replaces: at n = 5 it covers 40 % at worst, 80 % on average (five
    identical answers give an interval of width 0), which is why it alone could not keep small segments
    quiet. The enumeration tells the two methods apart, so the test above can fail."""
    low, mean = summary([nps_coverage("plain normal approximation", a, b, 5)[0] for a, b in NPS_GRID])
    assert low < 0.5 and mean < 0.8, (low, mean)
    low, mean = summary([nps_coverage("adjusted Wald", a, b, 5)[0] for a, b in NPS_GRID])
    assert low > 0.91 and mean > 0.945, (low, mean)


def test_wilson_covers_close_to_95_percent() -> None:
    """Wilson's coverage oscillates with n and p (k is discrete), never far below 95 % on average."""
    for n in SIZES:
        low, mean = summary([wilson_coverage(p, n) for p in GRID])
        assert mean >= 0.93, (n, low, mean)
        if n >= 20:
            assert low >= 0.90, (n, low)


@pytest.mark.parametrize(("a", "b", "n"), [(0.5, 0.2, 10), (0.05, 0.9, 20), (0.3, 0.3, 5)])
def test_a_simulation_agrees_with_the_enumeration(a: float, b: float, n: int) -> None:
    samples, rng = 4_000, random.Random(20_261_202)
    truth, hits = 100 * (a - b), 0
    for _ in range(samples):
        draws = [rng.random() for _ in range(n)]
        promoters = sum(r < a for r in draws)
        detractors = sum(a <= r < a + b for r in draws)
        low, high = nps_interval(promoters, detractors, n)
        assert low is not None and high is not None
        hits += low <= truth <= high
    exact = nps_coverage("adjusted Wald", a, b, n)[0]
    se = math.sqrt(exact * (1 - exact) / samples)
    assert abs(hits / samples - exact) <= 4 * se, (hits / samples, exact)


def test_docs_show_the_table() -> None:
    table = coverage_table()
    print(table)
    assert table in (ROOT / "docs" / "alerts.md").read_text(), "docs/alerts.md: update the coverage table"
