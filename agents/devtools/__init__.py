"""Tools for a developer's machine: the local Kafka launcher, the demo and the `kpimon top` terminal view."""
