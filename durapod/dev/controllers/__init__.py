"""The stand-in's controller manager: Deployments, ReplicaSets and Endpoints.

On a cluster kube-controller-manager turns a Deployment into ReplicaSets and pods and a
Service into Endpoints; here these three controllers do, each over HTTP against the
stand-in API server with its own watches and work queue (see :mod:`.client`), so a Helm
chart's Deployments run as pods on the stand-in's kubelet. StatefulSets, Jobs, DaemonSets
and the rest have no controller here.
"""

from __future__ import annotations

import asyncio
import contextlib

from durapod.dev.controllers.client import Client
from durapod.dev.controllers.deployments import DeploymentController
from durapod.dev.controllers.endpoints import EndpointsController
from durapod.dev.controllers.replicasets import ReplicaSetController

__all__ = ["ControllerManager"]


class ControllerManager:
    """The three controllers, started and stopped together."""

    def __init__(self, api_url: str, token: str) -> None:
        self._clients = [
            Client(api_url, token, name)
            for name in ("deployment-controller", "replicaset-controller", "endpoint-controller")
        ]
        self.deployments = DeploymentController(self._clients[0])
        self.replicasets = ReplicaSetController(self._clients[1])
        self.endpoints = EndpointsController(self._clients[2])
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(c.run(), name=type(c).__name__)
            for c in (self.deployments, self.replicasets, self.endpoints)
        ]

    async def synced(self) -> None:
        """Wait until each controller has listed what it watches."""
        for c in (self.deployments, self.replicasets, self.endpoints):
            await c.synced.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients:
            await client.close()
