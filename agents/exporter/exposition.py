"""/metrics in slices: the same text as prometheus_client's `generate_latest`, rendered without holding the
event loop for the whole of it.

A worker's exposition holds about 2,000 KPI samples (the current and the previous day of every owned
group): 200-250 kB of text that `generate_latest` formats in 25-55 ms of CPU in one go, 0.1-0.6 s on a
loaded machine. The worker's event loop is shared with the source reader, which could take no batch
meanwhile: in the bench (which reads /metrics twice a second) those scrapes were the input's longest waits
(issue #16 item 7). Here each metric family, and each slice of `SLICE_SAMPLES` samples of a large gauge
family, is formatted by `generate_latest` itself, and the handler lets the loop run other tasks once it
has worked for `budget` seconds. The text is byte-identical to `generate_latest`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

#: Samples of a gauge family formatted in one go.
SLICE_SAMPLES = 200
#: Seconds of formatting between two turns of the other tasks.
BUDGET_SECONDS = 0.005


class _Families(Collector):
    """A collector of given families: `generate_latest` formats exactly these."""

    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _slices(family: Metric) -> Iterator[Metric]:
    """The family, or for a large gauge family, families of consecutive slices of its samples.

    Only gauges: their samples are formatted one line each, in order, so the slices' lines are the
    family's lines. (Counters and histograms add derived lines per family; they are small here.)"""
    if family.type != "gauge" or len(family.samples) <= SLICE_SAMPLES:
        yield family
        return
    for start in range(0, len(family.samples), SLICE_SAMPLES):
        part = Metric(family.name, family.documentation, family.type, family.unit)
        part.samples = family.samples[start : start + SLICE_SAMPLES]
        yield part


async def render(registry: Collector, budget: float = BUDGET_SECONDS) -> bytes:
    """`generate_latest(registry)`, letting the loop run other tasks after every `budget` seconds of work.

    The collectors themselves run as `generate_latest` runs them (each one's `collect` in one go); a scrape
    then shows each family as collected, as with any scrape of a running process."""
    parts: list[bytes] = []
    started = time.perf_counter()
    for family in registry.collect():
        first = True
        for part in _slices(family):
            text = generate_latest(_Families(part))
            if not first:
                # The header lines (# HELP, # TYPE) once per family, as generate_latest writes them.
                text = text.split(b"\n", 2)[2]
            parts.append(text)
            first = False
            if time.perf_counter() - started >= budget:
                await asyncio.sleep(0)
                started = time.perf_counter()
    return b"".join(parts)
