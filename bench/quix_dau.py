"""The peer: an exact DAU in Quix Streams, the Python stream processor users would pick instead of kpimon.

Run as its own process by the bench (`python -m bench.quix_dau --help`; needs the optional dependency
`pip install -e '.[bench]'`). It computes only the global DAU, exactly, the way the Quix Streams
documentation builds stateful aggregations: each message is decoded by Quix's own JSON deserializer; a
click looks up its user's state (the days the user was active on; state is per message key, the user_id)
and, the first time the user is seen on its UTC day, emits that day; `group_by` re-partitions the emitted
days by day through Kafka, and a stateful count per day gives the DAU. Surveys are read and counted as
processed (they play no part in the DAU). Progress counts input messages, as the Faust stages do; the
DAU of the last day is reported as a figure, to compare with the truth.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.child import Progress, child_arguments

MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def event_day(ts: Any) -> int:
    """UTC day of an event's `ts`: epoch milliseconds, or RFC 3339 with an offset."""
    if isinstance(ts, int):
        return ts // MS_PER_DAY
    return ((datetime.fromisoformat(ts) - _EPOCH) // _ONE_MS) // MS_PER_DAY


class Ticker:
    """Counts input messages into `Progress`, writing its status file about once a second."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.written = 0.0

    def __call__(self, value: Any) -> None:
        progress = self.progress
        if progress.tick():
            return
        now = time.monotonic()
        if now - self.written >= 1.0:
            self.written = now
            progress.write()


def main() -> None:
    """Run the Quix Streams application until the parent stops it."""
    args = child_arguments(__doc__ or "")
    from quixstreams import Application  # the optional `bench` extra

    progress = Progress(args.expected, args.status)
    tick = Ticker(progress)
    app = Application(
        broker_address=args.broker,
        consumer_group=args.app_id,
        auto_offset_reset="earliest",
        state_dir=str(args.data_dir / "state"),
        loglevel="WARNING",
    )
    clicks_name, surveys_name = args.topics.split(",")
    clicks = app.topic(clicks_name, key_deserializer="bytes", value_deserializer="json")
    surveys = app.topic(surveys_name, key_deserializer="bytes", value_deserializer="json")

    def first_of_day(value: dict[str, Any], state: Any) -> dict[str, int] | None:
        day = event_day(value["ts"])
        days: list[int] = state.get("days", [])
        if day in days:
            return None
        days.append(day)
        state.set("days", days)
        return {"day": day}

    def count(value: dict[str, int], state: Any) -> None:
        dau = int(state.get("dau", 0)) + 1
        state.set("dau", dau)
        last = progress.figures.get("dau_last_day")
        if last is None or value["day"] >= last[0]:
            progress.figures["dau_last_day"] = [value["day"], dau]

    sdf = app.dataframe(clicks)
    sdf = sdf.update(tick)
    sdf = sdf.apply(first_of_day, stateful=True)
    sdf = sdf.filter(lambda value: value is not None)
    sdf = sdf.group_by(lambda value: str(value["day"]), name="day")
    sdf.update(count, stateful=True)
    app.dataframe(surveys).update(tick)
    app.run()


if __name__ == "__main__":
    main()
