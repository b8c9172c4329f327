"""Fixtures shared by the integration test modules."""

from __future__ import annotations

import pytest

from tests.pipeline import WEEK_DAYS, WEEK_LATENESS, WEEK_SEED, WEEK_USERS, History, simulate_history


@pytest.fixture(scope="session")
def week_history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """The simulated week and its reference (`kpimon simulate` and `kpimon reference`), once per session:
    the reliability and the cluster tests replay the same history."""
    history = simulate_history(
        tmp_path_factory.mktemp("week"), WEEK_USERS, WEEK_DAYS, WEEK_SEED, WEEK_LATENESS
    )
    assert history.rejected > 0, "the history must hold invalid lines to dead-letter"
    return history
