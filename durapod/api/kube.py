"""The API's Kubernetes calls: it writes TaskRuns (one record, two doors: whatever the
HTTP API creates, ``kubectl get tr`` shows), reads webhook Secrets, reviews tokens
and reads run pods' logs."""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from lightkube.core.exceptions import ApiError
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.core_v1 import PodLog, Secret

from durapod import auth
from durapod.kubeclient import Resources, TaskRunResource, code
from durapod.resources.models import Phase

Obj = dict[str, Any]


def _finished(run: Obj) -> bool:
    phase = (run.get("status") or {}).get("phase")
    return phase is not None and Phase(phase).finished


class LogUnavailable(Exception):
    """The API server has the pod but no log to give (its container has not started)."""


@dataclass(frozen=True)
class LogEnd:
    """The end of a pod's log, and whether anything before it was left out."""

    text: str
    truncated: bool


class _Kept:
    """The last ``limit`` bytes of a stream, kept chunk by chunk (never the whole)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size, self.cut = limit, 0, False
        self._chunks: deque[bytes] = deque()

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.size += len(chunk)
        while self.size - len(self._chunks[0]) >= self.limit:
            self.size -= len(self._chunks.popleft())
            self.cut = True

    def data(self) -> bytes:
        data = b"".join(self._chunks)
        if len(data) > self.limit:
            self.cut = True
            return data[-self.limit :]
        return data


def log_end(data: bytes, cut: bool, tail_lines: int) -> LogEnd:
    """A log's last ``tail_lines`` lines out of ``data`` (its end; ``cut``: bytes before
    it were dropped), starting at a whole line when there is one to start at."""
    if cut and b"\n" in data[:-1]:
        data = data[data.index(b"\n") + 1 :]  # the rest of a line cut in its middle
    ends = data.endswith(b"\n")
    lines = (data[:-1] if ends else data).split(b"\n") if data else []
    if len(lines) > tail_lines:
        lines, cut = lines[-tail_lines:], True
    text = b"\n".join(lines) + (b"\n" if ends and lines else b"")
    return LogEnd(text.decode("utf-8", "replace"), cut)


class Kube(Resources):
    """The shared calls, plus long-polls, Secrets, TokenReview and pods' logs."""

    async def pod_log(
        self, namespace: str, name: str, tail_lines: int, max_bytes: int
    ) -> LogEnd | None:
        """The end of the pod's log: its last ``tail_lines`` lines, at most ``max_bytes``
        of them; None when there is no such pod. The answer is streamed and only its end
        kept (lightkube's ``log`` reads it whole: one line can be any size).

        Raises:
            LogUnavailable: the pod has no log yet (400: its container is waiting).
        """
        generic = self.client._client  # as lightkube's ``log`` does it, but streamed
        prepared = generic.prepare_request(
            "get",
            PodLog,
            name=name,
            namespace=namespace,
            params={"tailLines": tail_lines + 1},  # one more line says whether any was left out
        )
        response = await generic.send(generic.build_adapter_request(prepared), stream=True)
        try:
            if response.is_error:
                await response.aread()
                try:
                    generic.raise_for_status(response)
                except ApiError as exc:
                    if code(exc) == 404:
                        return None
                    if code(exc) == 400:
                        raise LogUnavailable(exc.status.message or str(exc)) from exc
                    raise
            kept = _Kept(max_bytes)
            async for chunk in response.aiter_bytes():
                kept.add(chunk)
        finally:
            await response.aclose()
        return log_end(kept.data(), kept.cut, tail_lines)

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
