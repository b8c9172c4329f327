"""Bare Faust: one agent that only iterates over the raw input messages (no decoding, no table).

Run as its own process by the bench (`python -m bench.bare_faust --help`): what a Faust worker costs per
event before any work is done, on the same topics and machine as the other stages.
"""

from __future__ import annotations

from typing import Any

from bench.child import Progress, child_app, child_arguments, serve_child


def main() -> None:
    """Run the worker until the parent stops it."""
    args = child_arguments(__doc__ or "")
    progress = Progress(args.expected, args.status)
    app, topic = child_app(args, key_serializer="raw", value_serializer="raw")

    @app.agent(topic)
    async def iterate(stream: Any) -> None:
        async for _value in stream:
            progress.tick()

    serve_child(app, progress)


if __name__ == "__main__":
    main()
