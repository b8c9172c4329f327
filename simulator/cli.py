"""`kpimon simulate`: write simulated traffic to files, send it to Kafka, or keep sending it live."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from kpimon.agents.config.options import kafka_options
from kpimon.agents.config.settings import Settings
from kpimon.simulator.model import (
    DAY_MS,
    SCENARIOS,
    BatchConfig,
    BatchModel,
    Counts,
    Outgoing,
    Population,
    Scenario,
    batch_traffic,
)
from kpimon.simulator.render import render

_EPOCH_DATE = date(1970, 1, 1)


def parse_now(text: str | None) -> int:
    """`--now`: RFC 3339 with an offset, or integer epoch milliseconds; the wall clock when absent."""
    if text is None:
        return time.time_ns() // 1_000_000
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"not RFC 3339 or epoch milliseconds: {text!r}", param_hint="--now"
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter("needs an offset, e.g. 2026-11-24T12:00:00Z", param_hint="--now")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _ONE_MS


_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def _scenarios(texts: Iterable[str]) -> tuple[Scenario, ...]:
    try:
        return tuple(Scenario.parse(t) for t in texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None


def encoded(traffic: Iterable[Outgoing], counts: Counts) -> Iterator[tuple[str, bytes]]:
    """(topic kind, message value) in send order, counting as it goes."""
    for out in traffic:
        counts.add(out)
        yield out.draft.topic, render(out.draft)


def write_files(messages: Iterable[tuple[str, bytes]], out_dir: Path) -> None:
    """One message value per line: `clicks.jsonl` and `surveys.jsonl`, each in send order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "clicks.jsonl").open("wb") as clicks, (out_dir / "surveys.jsonl").open("wb") as surveys:
        files = {"clicks": clicks, "surveys": surveys}
        for topic, value in messages:
            files[topic].write(value + b"\n")


def scenarios_help() -> str:
    """The help's list of scenarios, one line each, made from the simulator's registry (so none is left
    out); a no-rewrap block for click."""
    width = max(map(len, SCENARIOS)) + len(":SEGMENT") + 2
    lines = [f"  {kind + ':SEGMENT':<{width}}{what}" for kind, what in SCENARIOS.items()]
    return "\b\nScenarios (--scenario KIND:SEGMENT):\n" + "\n".join(lines)


@click.command(
    "simulate",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog=scenarios_help(),
)
@click.option("--users", type=click.IntRange(min=1), default=3000, help="Population size.")
@click.option("--days", type=click.IntRange(min=1), default=75, help="Days of history (batch).")
@click.option("--seed", type=int, default=0, help="Same seed and options, same bytes.")
@click.option(
    "--end-day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Last simulated UTC day (batch). [default: the UTC day of --now]",
)
@click.option(
    "--now",
    "now_text",
    default=None,
    metavar="TS",
    help="Wall clock, RFC 3339 or epoch ms: no event is later than TS - 1 minute. [default: the clock]",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write DIR/clicks.jsonl and DIR/surveys.jsonl (batch).",
)
@click.option("--broker", default=None, metavar="HOST:PORT", help="Send to Kafka instead of writing files.")
@click.option("--topic-prefix", default=None, help="Topic name prefix (as KPIMON_TOPIC_PREFIX).")
@click.option("--late-fraction", type=click.FloatRange(0, 1), default=0.03, help="Events delivered late.")
@click.option("--lateness-days", type=click.FloatRange(0.01, 30), default=3.0, help="How late, at most.")
@click.option("--duplicate-fraction", type=click.FloatRange(0, 1), default=0.01, help="Events sent twice.")
@click.option(
    "--invalid-fraction", type=click.FloatRange(0, 1), default=0.005, help="Broken messages per event."
)
@click.option(
    "--scenario",
    "scenario_texts",
    multiple=True,
    metavar="KIND:SEGMENT",
    help="A deliberate change of one segment (the scenarios are listed below); SEGMENT a platform or plan"
    " (android, team, plan=pro) or all. Batch: KIND:SEGMENT@N starts it N days before the end.",
)
@click.option(
    "--no-signup-fraction",
    type=click.FloatRange(0, 1),
    default=0.02,
    help="Users whose events carry no signup_ts (their stage then depends on arrival order).",
)
@click.option(
    "--clicks-per-day",
    type=click.FloatRange(min=1),
    default=None,
    help="Batch: mean clicks per active user-day, in one session a day (default: the model's sessions,"
    " about 6). Low values give traffic where most clicks turn a new (user, day) active.",
)
@click.option(
    "--plan-tiers",
    type=click.IntRange(min=1),
    default=1,
    help="Batch: split each plan into N tiers, reported as plan free-1 .. free-N (more, smaller segments).",
)
@click.option(
    "--thin",
    is_flag=True,
    help="Batch: only the messages that can change a KPI (a user's first click of each day and segment,"
    " surveys, broken messages): the same KPIs from about a quarter of the messages, for a quick backfill.",
)
@click.option(
    "--population",
    "population_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Batch: also write the users' state at the end of the history to FILE (JSON). Live: continue"
    " from such a FILE: the same users, who left stays gone, the last day's active users keep coming.",
)
@click.option("--live", is_flag=True, help="Send events happening now, until Ctrl-C or SIGTERM.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=50.0, help="Live: events/s.")
@click.option(
    "--scenario-after", type=click.FloatRange(min=0), default=120.0, help="Live: seconds before scenarios."
)
@kafka_options
def simulate(
    users: int,
    days: int,
    seed: int,
    end_day: datetime | None,
    now_text: str | None,
    out_dir: Path | None,
    broker: str | None,
    topic_prefix: str | None,
    late_fraction: float,
    lateness_days: float,
    duplicate_fraction: float,
    invalid_fraction: float,
    scenario_texts: tuple[str, ...],
    no_signup_fraction: float,
    clicks_per_day: float | None,
    plan_tiers: int,
    thin: bool,
    population_file: Path | None,
    live: bool,
    rate: float,
    scenario_after: float,
    kafka: dict[str, Any],
) -> None:
    """Simulate realistic click and survey traffic: history to files or Kafka, or live traffic.

    \b
    Batch (history, one message value per line, in send order):
      kpimon simulate --users 3000 --days 75 --seed 1 --now 2026-11-24T12:00:00Z --out-dir sim/
      kpimon simulate --users 3000 --days 75 --seed 1 --broker 127.0.0.1:9092
    Live (events stamped now, at about --rate events/s):
      kpimon simulate --live --rate 50 --users 3000 --broker 127.0.0.1:9092 --scenario nps-drop:android

    \b
    Scenarios for the alerts (batch: the last 7 days, exactly the 7d window; the pair
    shows that the NPS alerts tell a real change from noise):
      --scenario nps-drop:android   android's NPS answers drop by about 100 points on ~30 answers a week
      --scenario nps-noise:ios      ios' NPS swings as much, but on 5 answers (its other prompts dismissed)
      --scenario dau-drop:all       DAU about 40 % lower for 7 days
      --scenario churn-wave:plan=team@40   team users leave from 40 days before the end on

    The traffic has a daily and weekly rhythm, ios/android/web and free/pro/team segments, signups, quiet
    spells and churn, NPS and CSAT surveys with segment-specific satisfaction, and deliberate noise: late
    events (up to --lateness-days), duplicates, and broken messages of every kind the validator rejects.

    Batch output is byte-identical for the same options and --now. No event is later than --now minus one
    minute (the last day is cut there); broken "future timestamp" messages lie 2 to 30 days after the day
    of --now. Replaying history through the worker needs a lateness bound covering --days (a backfill):
    `--max-lateness-days` for `kpimon reference`, KPIMON_MAX_LATENESS_DAYS for the worker.
    """
    scenarios = _scenarios(scenario_texts)
    now_ms = parse_now(now_text)
    counts = Counts()
    started = time.perf_counter()
    if live:
        if out_dir is not None:
            raise click.UsageError("--live sends to Kafka; --out-dir is for batch mode")
        from kpimon.simulator.live import run_live

        settings = _settings(broker, topic_prefix, kafka)
        population = None
        if population_file is not None:
            try:
                population = Population.loads(population_file.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise click.UsageError(f"cannot read the population {population_file}: {exc}") from None
        with _broker_errors(settings):
            run_live(
                settings,
                users=users,
                population=population,
                seed=seed,
                rate=rate,
                late_fraction=late_fraction,
                lateness_days=lateness_days,
                duplicate_fraction=duplicate_fraction,
                invalid_fraction=invalid_fraction,
                scenarios=scenarios,
                scenario_after=scenario_after,
                counts=counts,
            )
        click.echo(f"simulate: {counts.line()} ({time.perf_counter() - started:.1f} s live)", err=True)
        return
    if (out_dir is None) == (broker is None):
        raise click.UsageError("give either --out-dir DIR or --broker HOST:PORT")
    last_day = (end_day.date() - _EPOCH_DATE).days if end_day is not None else now_ms // DAY_MS
    config = BatchConfig(
        users=users,
        days=days,
        end_day=last_day,
        now_ms=now_ms,
        seed=seed,
        late_fraction=late_fraction,
        duplicate_fraction=duplicate_fraction,
        invalid_fraction=invalid_fraction,
        lateness_days=lateness_days,
        scenarios=scenarios,
        no_signup_fraction=no_signup_fraction,
        clicks_per_day=clicks_per_day,
        plan_tiers=plan_tiers,
        thin=thin,
    )
    try:
        config.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    model = BatchModel(config)
    messages = encoded(batch_traffic(config, model), counts)
    if out_dir is not None:
        write_files(messages, out_dir)
        target = str(out_dir)
    else:
        from kpimon.simulator.live import send_all

        settings = _settings(broker, topic_prefix, kafka)
        with _broker_errors(settings):
            send_all(settings, messages)
        target = f"{settings.clicks}, {settings.surveys} at {settings.broker}"
    if population_file is not None:
        population_file.write_text(Population.of(model).dumps())
    first = _EPOCH_DATE.toordinal() + config.first_day
    span = f"{date.fromordinal(first)}..{date.fromordinal(first + days - 1)}"
    elapsed = time.perf_counter() - started
    click.echo(f"simulate: {counts.line()} ({users} users, {span}, {elapsed:.1f} s -> {target})", err=True)


@contextlib.contextmanager
def _broker_errors(settings: Settings) -> Iterator[None]:
    """A broker problem ends the command with one clear line, not a traceback."""
    from kpimon.agents.config.preflight import KafkaAccessError

    try:
        yield
    except KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"simulate to {settings.broker} failed: {exc!r}") from None


def _settings(broker: str | None, topic_prefix: str | None, kafka: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(broker=broker, topic_prefix=topic_prefix, **kafka)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    simulate()
