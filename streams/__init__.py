"""Event and KPI definitions and the pure KPI math: no I/O here."""
