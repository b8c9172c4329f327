"""The Faust and Kafka edge of a worker: the app, its tables and agents, the bulk source reader.

The only code that imports faust, mode or aiokafka at run time; every private API of theirs it needs is in
`compat`, each with a contract test against the pinned versions.
"""
