"""`kpimon simulate`: deterministic, realistic click and survey traffic for kpimon.

`model` holds the population and its behaviour (pure, seeded), `render` turns events into message bytes
(broken ones included), `cli` is the command (files or a broker), `live` sends traffic happening now.
"""
