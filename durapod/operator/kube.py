"""The operator's Kubernetes calls beyond what kopf does for it (lightkube, async)."""

from __future__ import annotations

import socket
import time
from typing import Any, cast

from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from durapod.kubeclient import (
    Resources,
    TaskRunResource,
    TaskScheduleResource,
    code,
)
from durapod.timestamps import format_time, utcnow

COMPONENT = "durapod-operator"
INSTANCE = socket.gethostname()


class QuotaExceeded(Exception):
    """The API server refused a pod for a ResourceQuota (403 "exceeded quota")."""


class PodRejected(Exception):
    """The API server refused the pod as invalid (422): trying again changes nothing."""


class Conflict(Exception):
    """The object changed since it was read: read it again and decide again."""


class Kube(Resources):
    """The shared calls, plus status writes, pods, schedules and Events."""

    async def patch_run_status(self, run: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the run's, guarded by the resourceVersion it was read at."""
        meta = run["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            obj = await self.client.patch(
                TaskRunResource.Status,
                meta["name"],
                patch,
                namespace=meta["namespace"],
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if code(exc) == 409:
                raise Conflict(meta["name"]) from exc
            raise
        result: dict[str, Any] = obj.to_dict()
        return result

    async def get_taskschedule(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(TaskScheduleResource, namespace, name)

    async def list_taskruns(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector: dict[str, Any] = dict(labels)
        return [
            run.to_dict()
            async for run in self.client.list(TaskRunResource, namespace=namespace, labels=selector)
        ]

    async def merge_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge ``status`` unguarded, for fields one writer owns (schedules, lastCheckpoint)."""
        resource = {"taskruns": TaskRunResource, "taskschedules": TaskScheduleResource}[plural]
        try:
            await self.client.patch(
                resource.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if code(exc) != 404:
                raise

    async def delete_taskrun(self, namespace: str, name: str) -> None:
        await self._delete(TaskRunResource, namespace, name)

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete gracefully: the kubelet sends SIGTERM, then SIGKILL after the grace period."""
        await self._delete(Pod, namespace, name)

    async def _delete(self, resource: Any, namespace: str, name: str) -> None:
        try:
            await self.client.delete(resource, name, namespace=namespace)
        except ApiError as exc:
            if code(exc) != 404:
                raise

    async def create_pod(self, manifest: dict[str, Any]) -> bool:
        """Create the pod; False when it exists already (an attempt never gets two)."""
        try:
            await self.client.create(cast(Pod, Pod.from_dict(manifest)))
        except ApiError as exc:
            if code(exc) == 409:
                return False
            if code(exc) == 403 and "exceeded quota" in str(exc.status.message):
                raise QuotaExceeded(str(exc.status.message)) from exc
            if code(exc) == 422:
                raise PodRejected(str(exc.status.message)) from exc
            raise
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(Pod, namespace, name)

    async def list_all(self, plural: str, namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every TaskRun or TaskSchedule in ``namespaces``, or in the cluster when none are
        named (paged by lightkube)."""
        resource = {"taskruns": TaskRunResource, "taskschedules": TaskScheduleResource}[plural]
        return [
            obj.to_dict()
            for namespace in namespaces or ("*",)
            async for obj in self.client.list(resource, namespace=namespace)
        ]

    async def event(
        self, run: dict[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        """Record a Kubernetes Event on the run, for ``kubectl describe``.

        ``kubectl describe`` sorts Events by ``lastTimestamp``, which has whole seconds; like
        client-go's recorder, the name is ``<run>.<hex nanoseconds>``, so the API server
        lists one run's Events in the order they happened and Events within a second keep
        it. ``eventTime`` has the microseconds.
        """
        meta = run["metadata"]
        moment = utcnow()
        seconds = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = cast(
            Event,
            Event.from_dict(
                {
                    "metadata": {
                        "name": f"{meta['name']}.{time.time_ns():x}",
                        "namespace": meta["namespace"],
                    },
                    "involvedObject": {
                        "apiVersion": run["apiVersion"],
                        "kind": run["kind"],
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                        "resourceVersion": meta["resourceVersion"],
                    },
                    "reason": reason,
                    "action": reason,
                    "message": message[:1024],
                    "type": "Warning" if warning else "Normal",
                    "source": {"component": COMPONENT},
                    "reportingComponent": COMPONENT,
                    "reportingInstance": INSTANCE,
                    "eventTime": format_time(moment),
                    "firstTimestamp": seconds,
                    "lastTimestamp": seconds,
                    "count": 1,
                }
            ),
        )
        await self.client.create(event)
