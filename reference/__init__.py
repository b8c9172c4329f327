"""`kpimon reference`: the batch truth, every KPI recomputed in SQL (DuckDB) from the replayed input files.

It shares event *validation* with the stream (`streams.validation`) but none of the KPI math: Python reads
and validates the lines and loads the accepted events into DuckDB (`reference.load`); the KPIs are plain SQL
files under `reference/sql/` run in name order (`reference.compute`); `reference.compare` holds two record
sets to the contract's equality rule.
"""
