"""The command-line options of settings: one factory, the names and defaults of `Settings`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields

import click
import pytest

from kpimon.agents.config.options import setting
from kpimon.agents.config.settings import Settings
from kpimon.cli import main

SETTINGS = {f.name: f for f in fields(Settings)}


def commands(group: click.Group = main, prefix: str = "kpimon") -> Iterator[tuple[str, click.Command]]:
    """Every command of the `kpimon` CLI with its full name."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def test_every_kpimon_variable_option_is_the_setting_of_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """An option read from KPIMON_X hands Settings.from_env the value of setting x, under that name, and
    None when it is not given (a default of the option's own would hide the environment and config file)."""
    for variable in [name for name in os.environ if name.startswith("KPIMON_")]:
        monkeypatch.delenv(variable)
    checked = 0
    for where, command in commands():
        given = command.make_context(where, [], resilient_parsing=True).params
        for param in command.params:
            envvar = param.envvar if isinstance(param.envvar, str) else None
            if not (isinstance(param, click.Option) and envvar and envvar.startswith("KPIMON_")):
                continue
            name = envvar.removeprefix("KPIMON_").lower()
            assert name in SETTINGS, f"{where} {param.opts}: {envvar} is no setting"
            assert param.name == name, f"{where} {param.opts}: passed as {param.name}, not {name}"
            assert given[name] is None, f"{where} {param.opts}: {given[name]!r} when not given"
            checked += 1
    assert checked > 40  # the worker's options and the shared ones of seven commands


def test_a_setting_option_shows_the_settings_default() -> None:
    @click.command()
    @setting("flush_interval", "Seconds.", type=float)
    @setting("ssl_check_hostname", "Check.", shown="check")
    @setting("topic_prefix", "Prefix.")
    def command(**_: object) -> None: ...

    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    assert options["flush_interval"].help == f"Seconds.  [default: {Settings().flush_interval}]"
    assert options["flush_interval"].opts == ["--flush-interval"]
    assert options["ssl_check_hostname"].secondary_opts == ["--no-ssl-check-hostname"]
    assert options["topic_prefix"].help == "Prefix.  [default: none]"


def test_an_option_of_no_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="not a setting"):
        setting("flush_intervall", "A typo.")
