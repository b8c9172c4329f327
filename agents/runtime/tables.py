"""Faust topics and tables as kpimon declares them: raw bytes in and out, codecs chosen here."""

from __future__ import annotations

from typing import Any

import faust

from kpimon.agents import compat

#: The changelogged tables the ingest and aggregate agents register (tests check they agree).
TABLE_NAMES = ("user-state", "aggregates")


def changelog_topic_name(app_id: str, table_name: str) -> str:
    """The changelog topic Faust uses for a table of app `app_id`."""
    return f"{app_id}-{table_name}-changelog"


def leader_topic(app_id: str) -> str:
    """The topic Faust's partition assignor of app `app_id` elects its leader on (one partition)."""
    return f"{app_id}-__assignor-__leader"


def raw_topic(app: faust.App, *names: str) -> Any:
    """A topic (or several read as one) whose keys and values are bytes, decoded by kpimon itself."""
    return app.topic(*names, key_serializer="raw", value_serializer="raw")


#: RocksDB settings of every table's partition databases (ignored by the memory store). Faust's defaults
#: (64 MB write buffers, three per database, and a 2 GB block cache, per partition) let a worker's memory
#: grow with its users: 505 MB of peak RSS for a million users. These bound each partition's database to
#: about 32 MB of write buffers and 16 MB of cache; the states are small and written once per change.
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 16 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 8 * 1024 * 1024,
}


def table(app: faust.App, name: str, partitions: int, value_serializer: str) -> Any:
    """A changelogged table with bytes keys and the given value codec.

    Faust derives a table's serializers from its key/value *types* (json for anything but a Faust
    model) and ignores a schema's. Writes to the changelog use the table's serializers, but restoring
    reads through the changelog topic, which the constructor already built with json: rebuilt here with
    the same serializers, or a restart could not decode its own changelog and would start empty.
    """
    created: Any = app.Table(name, partitions=partitions, options=ROCKSDB_OPTIONS)
    created.key_serializer = "raw"
    created.value_serializer = value_serializer
    compat.rebuild_changelog_topic(created)
    return created
