"""Naive DAU: what a Faust user writes first, a per-event update of 1-day tumbling windowed tables.

Run as its own process by the bench (`python -m bench.naive --help`). Each message is decoded with the
standard library's json; a click marks (user, day) in the windowed table `seen` (one changelog write per
event) and, the first time, adds 1 to the day's count in the windowed table `dau`. Windows follow the
Kafka record timestamp, which the bench sets to the event time. Its final DAU of the last day is reported
as a figure, to compare with the truth.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bench.child import Progress, child_app, child_arguments, serve_child


def main() -> None:
    """Run the worker until the parent stops it."""
    args = child_arguments(__doc__ or "")
    progress = Progress(args.expected, args.status)
    app, topic = child_app(args)
    day, keep = timedelta(days=1), timedelta(days=args.days)
    seen = app.Table("seen", default=bool, partitions=args.partitions).tumbling(day, expires=keep)
    dau = app.Table("dau", default=int, partitions=args.partitions).tumbling(day, expires=keep)

    @app.agent(topic)
    async def count_dau(stream: Any) -> None:
        async for value in stream:
            event = json.loads(value)
            if "survey" not in event:  # a click
                user = event["user_id"]
                if not seen[user].current():
                    dau["all"] += 1
                seen[user] = True
            if progress.tick():
                progress.figures["dau_last_window"] = dau["all"].current()
                progress.write()

    serve_child(app, progress)


if __name__ == "__main__":
    main()
