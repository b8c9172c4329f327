"""The compose setup's Prometheus sends the workers' basic-auth password to no other server on a redirect.

Prometheus applies `basic_auth` to every request of a scrape, the redirected ones included, so a worker's
port taken over by something that redirects would collect the password. The compose file's scrape job
(deploy/compose.yaml) sets `follow_redirects: false`; here a real Prometheus runs that job against a
redirecting server on loopback, and a trap on another port must see nothing. The same job with
`follow_redirects: true` shows that the trap would get the password otherwise.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import running_prometheus
from tests.redirects import PASSWORD, TOKEN, serving

pytestmark = pytest.mark.slow

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def compose_scrape_job() -> dict[str, Any]:
    """The kpimon scrape job of the Prometheus config the compose file ships."""
    document = yaml.safe_load(COMPOSE.read_text())
    config = yaml.safe_load(document["configs"]["prometheus"]["content"])
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "kpimon" and "basic_auth" in job
    return dict(job)


@pytest.mark.parametrize("follow", [None, True], ids=["as-shipped", "following-redirects"])
def test_prometheus_sends_no_credentials_to_where_a_worker_redirects(
    tmp_path: Path, follow: bool | None
) -> None:
    password_file = tmp_path / "web-password"
    password_file.write_text(PASSWORD + "\n")
    with (
        serving({"/metrics": (200, None)}) as (trap_url, trap_seen),
        serving({"/metrics": (302, f"{trap_url}/metrics")}) as (worker_url, worker_seen),
    ):
        job = copy.deepcopy(compose_scrape_job())
        # Plain HTTP on loopback instead of the compose network's HTTPS; the rest as shipped.
        job.pop("tls_config", None)
        job["scheme"] = "http"
        job["basic_auth"]["password_file"] = str(password_file)
        job["static_configs"] = [{"targets": [worker_url.removeprefix("http://")]}]
        job["scrape_interval"] = "1s"
        if follow is not None:
            job["follow_redirects"] = follow
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump({"scrape_configs": [job]}))
        with running_prometheus(config_file, tmp_path / "storage"):
            deadline = time.monotonic() + 30
            while len(worker_seen) < 3 and time.monotonic() < deadline:
                time.sleep(0.5)
    assert len(worker_seen) >= 3, "Prometheus scraped the worker"
    assert all(auth == TOKEN for _, auth in worker_seen)  # the worker itself gets the password
    if follow is None:
        assert trap_seen == []
    else:
        assert trap_seen and all(auth == TOKEN for _, auth in trap_seen)  # what the setting prevents
