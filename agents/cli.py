"""`kpimon`: the command line. Each subcommand lives in the module that does its job."""

from __future__ import annotations

import click

from agents import __doc__ as _package_doc  # noqa: F401  (keeps the package importable first)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="kpimon")
def main() -> None:
    """kpimon: live engagement and satisfaction KPIs from Kafka click and survey events.

    \b
    Typical local session:
      kpimon kafka start            # a local Apache Kafka on 127.0.0.1
      kpimon worker                 # the Faust worker; /metrics on http://127.0.0.1:6066/metrics
      kpimon replay --clicks F --surveys F

    Every option can also be set by an environment variable KPIMON_<OPTION> (e.g. KPIMON_BROKER).
    """


def _register() -> None:
    # Imported here so `kpimon --help` stays fast and each command's heavy imports load only when used.
    from agents.kafka_cli import kafka
    from agents.replay import replay
    from agents.worker import worker

    main.add_command(kafka)
    main.add_command(worker)
    main.add_command(replay)


_register()
