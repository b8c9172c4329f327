"""kpimon's benchmark suite (issue #7): `python -m bench --help`.

Not part of the test suite: it starts its own Kafka, fills topics with a million or more simulated events
and runs several consumers and workers over them, which takes minutes. Only its pure helpers
(`bench.stats`, `bench.report`, the children's `bench.child.Progress`) are unit tested.
"""
