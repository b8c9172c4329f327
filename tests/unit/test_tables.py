"""Tables restore what they write: the changelog topic decodes with the table's own serializers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpimon.agents.app import create_app
from kpimon.agents.cli.worker import topic_specs
from kpimon.agents.config.settings import Settings
from kpimon.agents.runtime.tables import TABLE_NAMES, changelog_topic_name
from kpimon.streams.userstate import UserState


@pytest.mark.parametrize("name", ["users", "aggregates"])
def test_changelog_topic_uses_the_tables_serializers(tmp_path: Path, name: str) -> None:
    kpimon = create_app(Settings(app_id="t-tables", data_dir=tmp_path))
    table = getattr(kpimon, name)
    topic = table.changelog_topic
    # Faust writes with the table's serializers and restores through the topic's: they must agree.
    assert (topic.key_serializer, topic.value_serializer) == (table.key_serializer, table.value_serializer)
    assert topic.key_serializer == "raw"


def test_a_user_state_survives_the_changelog_round_trip(tmp_path: Path) -> None:
    kpimon = create_app(Settings(app_id="t-tables", data_dir=tmp_path))
    users, serializers = kpimon.users, kpimon.app.serializers
    state = UserState()
    state.note_seen(20_000)
    written = serializers.dumps_value(None, state, serializer=users.value_serializer)
    restored = serializers.loads_value(None, written, serializer=users.changelog_topic.value_serializer)
    assert isinstance(restored, UserState)
    assert restored.to_bytes() == state.to_bytes()
    key = serializers.dumps_key(None, b"user-1", serializer=users.key_serializer)
    assert serializers.loads_key(None, key, serializer=users.changelog_topic.key_serializer) == b"user-1"


def test_the_worker_creates_every_changelog_topic_beforehand(tmp_path: Path) -> None:
    settings = Settings(app_id="t-tables", data_dir=tmp_path, partitions=6)
    kpimon = create_app(settings)
    specs = {spec.name: spec for spec in topic_specs(settings)}
    for table in kpimon.app.tables.values():
        spec = specs[table.changelog_topic_name]
        assert spec.partitions == 6
        assert spec.config == {"cleanup.policy": "compact"}
    assert {changelog_topic_name("t-tables", name) for name in TABLE_NAMES} == {
        t.changelog_topic_name for t in kpimon.app.tables.values()
    }
