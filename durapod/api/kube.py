"""The API's Kubernetes calls: it writes TaskRuns (for child runs, later for triggers)."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from durapod.resources.models import API_VERSION, GROUP, VERSION

TaskRunResource = create_namespaced_resource(GROUP, VERSION, "TaskRun", "taskruns")


class Kube:
    """Created on first use: an API that never writes TaskRuns needs no kubeconfig."""

    def __init__(self) -> None:
        self._client: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient()
        return self._client

    async def create_child(
        self, namespace: str, name: str, task: str, payload: Any, parent: dict[str, str]
    ) -> dict[str, Any]:
        """Create the child TaskRun; if it exists already (a retried call), return it."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "TaskRun",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"durapod.io/parent": parent["name"]},
            },
            "spec": {"task": task, "payload": payload, "parent": parent},
        }
        try:
            created = await self.client.create(TaskRunResource.from_dict(body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            created = await self.client.get(TaskRunResource, name, namespace=namespace)
        result: dict[str, Any] = created.to_dict()
        return result
