"""The worker's HTTP endpoints on Faust's web server: /metrics, /ready and /live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from agents.app import Kpimon


def register_web(kpimon: Kpimon) -> None:
    """Serve the metrics registry and the health endpoints on the app's web port."""
    app = kpimon.app

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body = generate_latest(kpimon.registry)
        # The exposition format version travels in the Content-Type, as Prometheus expects.
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        # 503 while starting or rebalancing, so a load balancer or Kubernetes waits for it.
        if kpimon.ready:
            return web.json({"ready": True})
        return web.json({"ready": False}, status=503)

    @app.page("/live")
    async def live(web: Any, request: Any) -> Any:
        return web.json({"live": True})
