"""`kpimon`: the command line. It assembles the commands of agents/ (worker, kafka, kpis, replay, demo,
top), simulator/ (simulate) and reference/ (reference), each defined in the module that does its job."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping

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


class LazyCommands(MutableMapping[str, click.Command]):
    """The commands of `main`, each imported from its module when first looked up.

    Each command's module imports what its job needs (Faust, DuckDB, rich, ...): importing all of them was
    0.8 CPU s of every `kpimon worker` start (8 s at a load average of 20 on two cores), on the path of a
    restarted worker (issue #19). `kpimon --help` still loads every command, for its summary line.
    """

    def __init__(self, where: dict[str, str]) -> None:
        self._where = where  # name -> "module:attribute"
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), name
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._where.setdefault(name, "")
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


main.commands = LazyCommands(
    {
        "kafka": "kpimon.agents.cli.kafka:kafka",
        "worker": "kpimon.agents.cli.worker:worker",
        "replay": "kpimon.agents.cli.replay:replay",
        "kpis": "kpimon.agents.cli.kpis:kpis",
        "dead-letters": "kpimon.agents.cli.deadletters:dead_letters",
        "history": "kpimon.agents.cli.history:history",
        "reference": "kpimon.reference.cli:reference",
        "simulate": "kpimon.simulator.cli:simulate",
        "demo": "kpimon.agents.devtools.demo:demo",
        "top": "kpimon.agents.devtools.top:top",
    }
)
