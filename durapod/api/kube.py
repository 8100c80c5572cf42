"""The API's Kubernetes calls: it writes TaskRuns (one record, two doors: whatever the
HTTP API creates, ``kubectl get tr`` shows), reads webhook Secrets, reviews tokens
and reads run pods' logs."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

from lightkube.core.exceptions import ApiError
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.core_v1 import Secret

from durapod import auth
from durapod.kubeclient import Resources, TaskRunResource, code
from durapod.resources.models import Phase

Obj = dict[str, Any]


def _finished(run: Obj) -> bool:
    phase = (run.get("status") or {}).get("phase")
    return phase is not None and Phase(phase).finished


class LogUnavailable(Exception):
    """The API server has the pod but no log to give (its container has not started)."""


class Kube(Resources):
    """The shared calls, plus long-polls, Secrets, TokenReview and pods' logs."""

    async def pod_log(self, namespace: str, name: str, tail_lines: int) -> str | None:
        """The last ``tail_lines`` lines of the pod's log; None when there is no such pod.

        Raises:
            LogUnavailable: the pod has no log yet (400: its container is waiting).
        """
        try:
            lines = [
                line
                async for line in self.client.log(name, namespace=namespace, tail_lines=tail_lines)
            ]
        except ApiError as exc:
            if code(exc) == 404:
                return None
            if code(exc) == 400:
                raise LogUnavailable(exc.status.message or str(exc)) from exc
            raise
        return "".join(lines)

    async def create_child(
        self,
        namespace: str,
        name: str,
        task: str,
        payload: Any,
        parent: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """The child run, or the one a retried call made: (run, created now)."""
        return await self.create_taskrun(
            namespace,
            name,
            {"task": task, "payload": payload, "parent": parent},
            labels={"durapod.io/parent": parent["name"]},
            annotations=annotations,
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

    async def get_secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        secret = await self._get(Secret, namespace, name)
        value = ((secret or {}).get("data") or {}).get(key)
        return base64.b64decode(value) if value is not None else None

    async def review_pod_token(self, token: str) -> tuple[str, str] | None:
        """(namespace, pod name) of a pod-bound ServiceAccount token for durapod's
        audience, by TokenReview; None when the API server does not accept it."""
        review = TokenReview.from_dict(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [auth.AUDIENCE]},
            }
        )
        result = await self.client.create(cast(TokenReview, review))
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if auth.AUDIENCE not in (status.audiences or []):
            return None
        prefix, _, rest = (status.user.username or "").partition("system:serviceaccount:")
        pod_names = (status.user.extra or {}).get(auth.POD_NAME_EXTRA) or []
        if prefix or ":" not in rest or len(pod_names) != 1:
            return None
        return rest.split(":", 1)[0], pod_names[0]

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
