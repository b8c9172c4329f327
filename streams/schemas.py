"""JSON Schemas of the input events and the output record, generated from the models themselves.

`docs/schemas/*.json` are this module's output; a test fails when they drift from the code.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from kpimon.streams.events import ClickEvent, SurveyEvent
from kpimon.streams.output import KpiRecord

_MODELS: dict[str, tuple[type[msgspec.Struct], str]] = {
    "click-event.schema.json": (ClickEvent, "A message value of the `clicks` topic (key: user_id as UTF-8)."),
    "survey-event.schema.json": (
        SurveyEvent,
        "A message value of the `surveys` topic (key: user_id as UTF-8).",
    ),
    "kpi-record.schema.json": (KpiRecord, "A message value of the compacted `kpimon-kpis` topic."),
}

_NOTES = {
    "survey-event.schema.json": (
        "score is required when action is `answered` (NPS 0..10, CSAT 1..5) and forbidden otherwise; "
        "ts must not be more than 5 minutes ahead of the wall clock nor older than the lateness bound."
    ),
    "click-event.schema.json": (
        "ts must not be more than 5 minutes ahead of the wall clock nor older than the lateness bound; "
        "user_id must equal the message key when there is one."
    ),
}


def schema_documents() -> dict[str, str]:
    """File name -> JSON Schema text (stable formatting, trailing newline)."""
    out: dict[str, str] = {}
    for name, (model, description) in _MODELS.items():
        schema: dict[str, Any] = msgspec.json.schema(model)
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://kpimon.dev/schemas/{name}",
            "description": description + (" " + _NOTES[name] if name in _NOTES else ""),
            **schema,
        }
        out[name] = json.dumps(document, indent=2, sort_keys=True) + "\n"
    return out
