"""The pure pipeline operators: batches -> user states -> counters -> partials -> global values.

Nothing here imports faust, mode or aiokafka (an import-linter contract keeps it so): every operator is
tested in-process, and the runtime feeds it.
"""
