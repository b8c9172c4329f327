"""`kpimon`: the command line. It assembles the commands of agents/ (worker, kafka, kpis, replay, demo,
top), simulator/ (simulate) and reference/ (reference), each defined in the module that does its job."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="kpimon")
def main() -> None:
    """kpimon: live engagement and satisfaction KPIs from Kafka click and survey events.

    \b
    Everything at once (local Kafka, a worker, live simulated traffic):
      kpimon demo
    \b
    Step by step:
      kpimon kafka start                      # a local Apache Kafka on 127.0.0.1:9092
      kpimon worker                           # the Faust worker; http://127.0.0.1:6066/metrics
      kpimon simulate --out-dir sim/          # 75 days of realistic traffic, as files
      kpimon replay --clicks sim/clicks.jsonl --surveys sim/surveys.jsonl
      kpimon kpis                             # the published KPIs, as JSON lines
      kpimon dead-letters                     # the latest rejected messages, with their reason
      kpimon history --out history.om         # the KPI history for Prometheus (promtool backfill)
      kpimon reference --clicks sim/clicks.jsonl --surveys sim/surveys.jsonl   # the batch truth

    The worker's options, and --broker/--topic-prefix everywhere, also read KPIMON_<OPTION> variables
    (e.g. KPIMON_BROKER).
    """


def _register() -> None:
    # Imported here so `kpimon --help` stays fast and each command's heavy imports load only when used.
    from kpimon.agents.cli.deadletters import dead_letters
    from kpimon.agents.cli.history import history
    from kpimon.agents.cli.kafka import kafka
    from kpimon.agents.cli.kpis import kpis
    from kpimon.agents.cli.replay import replay
    from kpimon.agents.cli.worker import worker
    from kpimon.agents.devtools.demo import demo
    from kpimon.agents.devtools.top import top
    from kpimon.reference.cli import reference
    from kpimon.simulator.cli import simulate

    main.add_command(kafka)
    main.add_command(worker)
    main.add_command(replay)
    main.add_command(kpis)
    main.add_command(dead_letters)
    main.add_command(history)
    main.add_command(reference)
    main.add_command(simulate)
    main.add_command(demo)
    main.add_command(top)


_register()
