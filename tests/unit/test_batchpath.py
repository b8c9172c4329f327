"""The bench's Kafka-free batch stage: batches like the reader's, repeatable results, both traffic mixes."""

from __future__ import annotations

from bench import batchpath, fill
from bench.report import render_batch

NOW = 1_795_500_000_000 - 1_795_500_000_000 % 3_600_000


def test_batches_keep_each_partitions_offset_order_and_alternate_partitions() -> None:
    messages = list(fill.simulated(60, 5, 1, NOW))
    data = batchpath.batches_of(iter(messages), NOW, size=50)
    assert data.messages == len(messages) == sum(len(records) for _, _, records in data.batches)
    seen: dict[tuple[str, int], int] = {}
    for topic, partition, records in data.batches:
        assert 0 < len(records) <= 50
        offsets = [r.offset for r in records]
        assert offsets == list(range(seen.get((topic, partition), 0), offsets[-1] + 1))
        seen[topic, partition] = offsets[-1] + 1
    assert len({(t, p) for t, p, _ in data.batches[:4]}) > 1  # not one partition after the other


def test_two_passes_give_the_same_result_digest_and_every_message_is_accepted() -> None:
    data = batchpath.batches_of(fill.simulated(80, 10, 2, NOW, clicks_per_day=1.8), NOW, size=100)
    one, two = batchpath.run_once(data), batchpath.run_once(data)
    assert one.digest == two.digest
    assert one.accepted == data.messages and one.dead_letters == 0
    assert one.cpu_seconds > 0
    other = batchpath.batches_of(fill.simulated(80, 10, 3, NOW, clicks_per_day=1.8), NOW, size=100)
    assert batchpath.run_once(other).digest != one.digest


def test_the_stage_reports_both_mixes() -> None:
    result = batchpath.run(3000, 10, 1, repeats=2, size=500)
    assert set(result.figures) == {"repeat", "changing"}
    for figures in result.figures.values():
        assert figures["identical"] and figures["digests_equal"]
        assert set(figures["cores"]) == set(batchpath.cores())
        assert all(c["per_cpu_second"] > 0 for c in figures["cores"].values())
    lines = render_batch(result)
    assert any(line.strip().startswith("changing:") for line in lines)
