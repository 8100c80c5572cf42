"""The Kubernetes calls the operator and the API share (lightkube, async): reading and
writing durapod's resources. Each side adds its own calls in ``operator/kube.py`` and
``api/kube.py``."""

from __future__ import annotations

from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from durapod.resources.models import API_VERSION, GROUP, VERSION

TaskRunResource = create_namespaced_resource(GROUP, VERSION, "TaskRun", "taskruns")
TaskScheduleResource = create_namespaced_resource(GROUP, VERSION, "TaskSchedule", "taskschedules")
TaskDefinitionResource = create_namespaced_resource(
    GROUP, VERSION, "TaskDefinition", "taskdefinitions"
)
Obj = dict[str, Any]


def code(exc: ApiError) -> int:
    return int(exc.status.code or 0)


class Resources:
    """TaskRuns and TaskDefinitions through the API server; the client is made on first
    use, so a process that never calls the cluster needs no kubeconfig."""

    def __init__(self, client: AsyncClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient()
        return self._client

    async def _get(self, resource: Any, namespace: str, name: str) -> Obj | None:
        try:
            obj = await self.client.get(resource, name, namespace=namespace)
        except ApiError as exc:
            if code(exc) == 404:
                return None
            raise
        return cast(Obj, obj.to_dict())

    async def get_taskrun(self, namespace: str, name: str) -> Obj | None:
        return await self._get(TaskRunResource, namespace, name)

    async def get_taskdefinition(self, namespace: str, name: str) -> Obj | None:
        return await self._get(TaskDefinitionResource, namespace, name)

    async def create_taskrun(
        self,
        namespace: str,
        name: str,
        spec: Obj,
        labels: dict[str, str] | None = None,
        owner: Obj | None = None,
        annotations: dict[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Create the TaskRun, or find the one a retried call made: (run, created now)."""
        metadata: Obj = {"name": name, "namespace": namespace, "labels": labels or {}}
        if annotations:
            metadata["annotations"] = annotations
        if owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
            ]
        body = {"apiVersion": API_VERSION, "kind": "TaskRun", "metadata": metadata, "spec": spec}
        try:
            created = await self.client.create(TaskRunResource.from_dict(body))
        except ApiError as exc:
            if code(exc) != 409:
                raise
            return cast(
                Obj, (await self.client.get(TaskRunResource, name, namespace=namespace)).to_dict()
            ), False
        return cast(Obj, created.to_dict()), True

    async def cancel_taskrun(self, namespace: str, name: str) -> Obj | None:
        """Set ``spec.cancel``; None when there is no such run."""
        try:
            obj = await self.client.patch(
                TaskRunResource,
                name,
                {"spec": {"cancel": True}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if code(exc) == 404:
                return None
            raise
        return cast(Obj, obj.to_dict())
