"""An in-memory Kubernetes API server for tests and ``durapod dev``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from durapod.dev.apiserver.cluster import Cluster
from durapod.dev.apiserver.server import ApiServer

#: The port of the ``kubernetes`` Service, which pods dial.
SERVICE_PORT = 443


@dataclass
class Serving:
    """A running API server: its runner and the addresses it answers on."""

    runner: web.AppRunner
    #: Plain HTTP: tests, the kubelet and tools on this machine; no token is the admin.
    url: str
    #: HTTPS with a serving certificate of ``cluster.authority``: what kubeconfigs use;
    #: no token is ``system:anonymous``, as on a cluster.
    secure_url: str
    #: What pods are told the API server is (``KUBERNETES_SERVICE_HOST``/``_PORT``), as
    #: the ``kubernetes`` Service's address: HTTPS on port 443 of a loopback address of
    #: its own (``127.x.y.z``, so stand-ins side by side do not meet), where kopf's
    #: in-cluster ``https://kubernetes.default.svc`` finds it through the pod's
    #: ``/etc/hosts``; ``secure_url`` when port 443 cannot be had (not root).
    cluster_url: str


async def serve(
    cluster: Cluster,
    token: str,
    log_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    request_log: Path | None = None,
    secure_port: int = 0,
) -> Serving:
    """Serve ``cluster`` over HTTP on ``host:port``, over HTTPS on ``host:secure_port``
    (0 picks a free port for each) and on the service address (see :class:`Serving`).

    ``request_log`` names a file to log every request to, with its user and decision.
    """
    server = ApiServer(cluster, token, log_dir, request_log)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    plain = web.TCPSite(runner, host, port)
    await plain.start()
    service_ip = _loopback_address()
    context = cluster.authority.server_context([service_ip])
    secure = web.TCPSite(runner, host, secure_port, ssl_context=context)
    await secure.start()
    secure_url = f"https://{host}:{secure.port}"
    cluster_url = secure_url
    service = web.TCPSite(runner, service_ip, SERVICE_PORT, ssl_context=context)
    try:
        await service.start()
        cluster_url = f"https://{service_ip}:{SERVICE_PORT}"
    except OSError:
        await service.stop()  # a privileged port, or a clash: pods get secure_url
    return Serving(runner, f"http://{host}:{plain.port}", secure_url, cluster_url)


def _loopback_address() -> str:
    """A loopback address of the 127/8 block, none of 127.0.0.x."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def start(
    cluster: Cluster,
    token: str,
    log_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    request_log: Path | None = None,
) -> tuple[web.AppRunner, str]:
    """:func:`serve`, answering with the runner and the plain HTTP address."""
    serving = await serve(cluster, token, log_dir, host, port, request_log)
    return serving.runner, serving.url


__all__ = ["Cluster", "Serving", "serve", "start"]
