"""The aggregates table's changelog codec keeps versions wider than 64 bits (engine.versioned)."""

from __future__ import annotations

from faust.serializers import codecs

from kpimon.agents.pipeline.engine import versioned
from kpimon.agents.runtime import aggregate_agent


def test_entries_with_wide_versions_round_trip_through_the_aggregates_codec() -> None:
    epoch = (7 << 48) + 1_764_700_000_000  # generation 7, a start time in ms (Ownership.epoch)
    version = versioned(epoch, 123_456)
    assert version >= 1 << 64  # beyond what orjson (Faust's json codec when installed) encodes
    entry = {"3": {"v": version, "c": {"active_users/1d": [1, 2]}}}
    codec = codecs.get_codec("kpimon_json")
    assert isinstance(codec, aggregate_agent.WideIntJson)
    data = codec.dumps(entry)
    assert codec.loads(data) == entry
    assert data == b'{"3":{"v":%d,"c":{"active_users/1d":[1,2]}}}' % version
