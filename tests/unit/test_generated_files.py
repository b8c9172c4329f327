"""Generated artifacts are committed; they must be exactly what the code generates (`make generate`)."""

from __future__ import annotations

import json

import pytest

from kpimon.streams.events import ClickEvent, SurveyEvent
from scripts.generate import ROOT, generated_files


@pytest.mark.parametrize("path", sorted(generated_files()), ids=str)
def test_committed_file_matches_the_code(path: object) -> None:
    expected = generated_files()[path]  # type: ignore[index]
    actual = (ROOT / str(path)).read_text()
    assert actual == expected, f"{path} is stale: run `make generate`"


def test_event_schemas_list_every_model_field() -> None:
    files = generated_files()
    for name, model in (("click-event.schema.json", ClickEvent), ("survey-event.schema.json", SurveyEvent)):
        schema = json.loads(next(text for path, text in files.items() if path.name == name))
        definition = schema["$defs"][model.__name__]
        assert set(definition["properties"]) == set(model.__struct_fields__)
        assert set(definition["required"]) == {"event_id", "user_id", "ts"} | (
            {"type"} if model is ClickEvent else {"survey", "action"}
        )
