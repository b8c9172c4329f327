"""Configuration shared by every kpimon command: settings, Kafka security, topics and pre-flight checks.

The one part of `kpimon.agents` that `kpimon.simulator` and `kpimon.reference` may import.
"""
