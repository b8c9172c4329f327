"""`kpimon top` never sends the workers' basic-auth credentials to another origin on a redirect.

Two real HTTP servers on loopback: a "worker" that redirects, and a "trap" on another port that records
every Authorization header it receives.
"""

from __future__ import annotations

import pytest

from kpimon.agents.devtools.top import MetricsAccess, origin, scrape
from tests.redirects import PASSWORD, TOKEN, USER, serving

ACCESS = MetricsAccess(user=USER, password=PASSWORD)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_gets_no_credentials(code: int) -> None:
    with serving({"/metrics": (200, None)}) as (trap_url, trap_seen):
        with serving({"/metrics": (code, f"{trap_url}/metrics")}) as (worker_url, worker_seen):
            assert scrape(f"{worker_url}/metrics", access=ACCESS) is None
        assert worker_seen == [("/metrics", TOKEN)]
    assert all(auth is None for _, auth in trap_seen)
    assert trap_seen == []  # not even followed without them


def test_a_redirect_within_the_origin_keeps_the_credentials() -> None:
    with serving({"/old": (302, "/metrics"), "/metrics": (200, None)}) as (url, seen):
        totals = scrape(f"{url}/old", access=ACCESS)
    assert totals is not None and totals.events == {"accepted": 7.0}
    assert seen == [("/old", TOKEN), ("/metrics", TOKEN)]


def test_the_same_host_on_another_port_or_scheme_is_another_origin() -> None:
    assert origin("http://Worker-1:6066/metrics") == origin("http://worker-1:6066/x")
    assert origin("https://w/metrics") == origin("https://w:443/")
    assert origin("http://w:6066/") != origin("http://w:6067/")
    assert origin("https://w:6066/") != origin("http://w:6066/")
    assert origin("http://w:6066/") != origin("http://w.evil:6066/")
