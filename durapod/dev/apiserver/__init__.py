"""An in-memory Kubernetes API server for tests and ``durapod dev``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from durapod.dev.apiserver.cluster import Cluster
from durapod.dev.apiserver.server import ApiServer


async def start(
    cluster: Cluster,
    token: str,
    log_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    request_log: Path | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve ``cluster`` on ``host:port`` (0 picks a free port); return the runner and URL.

    ``request_log`` names a file to log every request to, with its user and decision.
    """
    server = ApiServer(cluster, token, log_dir, request_log)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


__all__ = ["Cluster", "start"]
