"""The API's Kubernetes calls: it writes TaskRuns (one record, two doors: whatever the
HTTP API creates, ``kubectl get tr`` shows) and reviews ServiceAccount tokens."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from durapod.resources.models import API_VERSION, GROUP, VERSION, Phase

TaskRunResource = create_namespaced_resource(GROUP, VERSION, "TaskRun", "taskruns")
TaskDefinitionResource = create_namespaced_resource(
    GROUP, VERSION, "TaskDefinition", "taskdefinitions"
)
Obj = dict[str, Any]


def _finished(run: Obj) -> bool:
    phase = (run.get("status") or {}).get("phase")
    return phase is not None and Phase(phase).finished


class Kube:
    """Created on first use: an API that never writes TaskRuns needs no kubeconfig."""

    def __init__(self) -> None:
        self._client: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient()
        return self._client

    async def _get(self, resource: Any, namespace: str, name: str) -> Obj | None:
        try:
            obj = await self.client.get(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
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
        annotations: dict[str, str] | None = None,
    ) -> Obj:
        """Create the TaskRun; if it exists already (a retried call), return that one."""
        metadata: Obj = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": API_VERSION, "kind": "TaskRun", "metadata": metadata, "spec": spec}
        try:
            created = await self.client.create(TaskRunResource.from_dict(body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            created = await self.client.get(TaskRunResource, name, namespace=namespace)
        return cast(Obj, created.to_dict())

    async def create_child(
        self, namespace: str, name: str, task: str, payload: Any, parent: dict[str, str]
    ) -> Obj:
        return await self.create_taskrun(
            namespace,
            name,
            {"task": task, "payload": payload, "parent": parent},
            labels={"durapod.io/parent": parent["name"]},
        )

    async def wait_finished(self, namespace: str, name: str, seconds: float) -> Obj | None:
        """The TaskRun once its phase is final, or as it is when ``seconds`` run out.

        Watches from the resourceVersion it read, so no transition can slip between.
        """
        run = await self.get_taskrun(namespace, name)
        if run is None or _finished(run):
            return run
        try:
            async with asyncio.timeout(seconds):
                watch = self.client.watch(
                    TaskRunResource,
                    namespace=namespace,
                    fields={"metadata.name": name},
                    resource_version=run["metadata"]["resourceVersion"],
                    server_timeout=max(1, int(seconds)),
                )
                async for event, obj in watch:
                    run = cast(Obj, obj.to_dict())
                    if event == "DELETED" or _finished(run):
                        return run
        except TimeoutError:
            pass
        return await self.get_taskrun(namespace, name)

    async def cancel(self, namespace: str, name: str) -> Obj | None:
        try:
            obj = await self.client.patch(
                TaskRunResource,
                name,
                {"spec": {"cancel": True}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return cast(Obj, obj.to_dict())

    async def get_secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        if secret.data and key in secret.data:
            return base64.b64decode(secret.data[key])
        return None

    async def review_token(self, token: str) -> str | None:
        """The user a ServiceAccount (or other) token belongs to, by TokenReview."""
        review = TokenReview.from_dict(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
        )
        result = await self.client.create(cast(TokenReview, review))
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return None
        return status.user.username
