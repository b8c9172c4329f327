"""Which batch core applies the batches: the compiled one (the extension `kpimon._native`, built from
native/ by `pip install`) or the Python engine, which is its specification and fallback.

The `core` setting (`KPIMON_CORE`) chooses: `native` or `python`; empty, the compiled core when it is
installed, else the Python engine with one warning line. The choice is made here and nowhere else
(docs/architecture.md, "The batch core").
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Literal

log = logging.getLogger(__name__)

#: The environment variable of the `core` setting.
ENV = "KPIMON_CORE"
CoreName = Literal["python", "native"]
CORES: tuple[CoreName, ...] = ("python", "native")

_warned = False


def native_module() -> ModuleType | None:
    """The compiled core's module (typed by kpimon/_native.pyi), or None when it is not installed."""
    try:
        return importlib.import_module("kpimon._native")
    except ImportError:
        return None


def selected(value: str | None = None) -> CoreName:
    """The core to use: `value` (the `core` setting) when given, else `native` when installed, else
    `python`. Raises ValueError for an unknown name, RuntimeError when `native` is not installed."""
    global _warned
    name = (value or "").strip().lower()
    if name == "python":
        return "python"
    if name == "native":
        if native_module() is None:
            raise RuntimeError(f"{ENV}=native, but the compiled core (kpimon._native) is not installed")
        return "native"
    if name:
        raise ValueError(f"{ENV} must be one of {', '.join(CORES)}, not {name!r}")
    if native_module() is not None:
        return "native"
    if not _warned:
        _warned = True
        log.warning(
            "the compiled batch core (kpimon._native) is not installed: using the Python engine "
            "(slower; `make setup` builds it when cargo is there)"
        )
    return "python"
