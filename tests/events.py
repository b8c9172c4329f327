"""The one factory of test input events: a valid click or survey as a dict, and its message bytes.

Every field not given gets a valid value, and each event a fresh `event_id` unless one is given. A field
given a value is set to it as is, even an invalid one (`user_id=42`, `score=None`: a validation test); a
field given `DROP` is left out (a `missing_field` test). A survey has a score only when answered, unless
one is given.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Final

#: A field given this value is left out of the event.
DROP: Final = object()

_ids = itertools.count()


def click(*, ts: Any, user_id: Any = "u1", **fields: Any) -> dict[str, Any]:
    """A click of `user_id` at `ts` (epoch ms or RFC 3339), type `page_view` unless given."""
    event = {"event_id": f"c{next(_ids)}", "user_id": user_id, "ts": ts, "type": "page_view"}
    return _with(event, fields)


def survey(*, ts: Any, user_id: Any = "u1", action: Any = "answered", **fields: Any) -> dict[str, Any]:
    """A survey event of `user_id` at `ts`: an NPS answer of 9 unless `survey`, `action`, `score` say else."""
    event = {"event_id": f"s{next(_ids)}", "user_id": user_id, "ts": ts, "survey": "nps", "action": action}
    if action == "answered":
        event["score"] = 9
    return _with(event, fields)


def message(event: dict[str, Any]) -> bytes:
    """The event as a Kafka message value: its JSON bytes."""
    return json.dumps(event).encode()


def _with(event: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in {**event, **fields}.items() if value is not DROP}
