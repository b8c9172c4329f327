"""The `kpimon` command line: one module per command group, `main` assembles them."""
