"""/metrics rendered in slices is byte-identical to prometheus_client's own exposition."""

from __future__ import annotations

import asyncio

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)

from kpimon.agents.exporter import exposition


def registry() -> CollectorRegistry:
    """Every metric type, and a gauge family several slices long (the KPI gauges are)."""
    registry = CollectorRegistry()
    Counter("events", "Events.", ["topic", "outcome"], registry=registry).labels("clicks", "ok").inc(3)
    histogram = Histogram("held_seconds", "Waits.", registry=registry)
    for value in (0.01, 0.2, 3.0):
        histogram.observe(value)
    Summary("sizes", "Sizes.", registry=registry).observe(4)
    Info("build", "Build.", registry=registry).info({"version": "1"})
    Enum("state", "State.", states=["a", "b"], registry=registry).state("b")
    wide = Gauge("kpi_value", 'A "KPI"\nwith a newline in its help.', ["segment", "day"], registry=registry)
    for i in range(2 * exposition.SLICE_SAMPLES + 7):
        wide.labels(f"segment-{i}", "current").set(i / 7)
    Gauge("empty", "No samples.", ["x"], registry=registry)
    return registry


async def test_the_sliced_text_is_generate_latests() -> None:
    metrics = registry()
    expected = generate_latest(metrics)
    assert await exposition.render(metrics) == expected
    assert await exposition.render(metrics, budget=0.0) == expected  # a turn for the others after every part


async def test_rendering_lets_other_tasks_run_between_slices() -> None:
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    await exposition.render(registry(), budget=0.0)
    done = True
    await task
    # At least one turn per slice of the wide family (three), besides the other families'.
    assert turns >= 3
