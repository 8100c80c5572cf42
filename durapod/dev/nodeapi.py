"""The API calls a node makes: pod status, bindings, deletions, its Node, and Events.

Shared by the stand-in kubelet and its scheduler, over one HTTP session. Events are
recorded as client-go's legacy recorder does: a repeat of the same event (same object,
type, reason, message and source) bumps the first one's ``count`` and
``lastTimestamp`` instead of adding another, so ``kubectl describe`` shows ``(x4 over
2m)`` and the store does not grow with each retry.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
#: The most repeated events remembered for correlation (client-go keeps an LRU of 4096).
_REMEMBERED = 4096


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeApi:
    """One node's client of the API server."""

    def __init__(self, api_url: str, token: str, node_name: str) -> None:
        self.api_url = api_url
        self.token = token
        self.node_name = node_name
        self._session: aiohttp.ClientSession | None = None
        #: Correlation key → (namespace, event name, count) of events already posted.
        self._events: dict[tuple[str, ...], tuple[str, str, int]] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def pod_url(self, namespace: str, name: str, sub: str = "") -> str:
        return f"{self.api_url}/api/v1/namespaces/{namespace}/pods/{name}{sub}"

    async def _send(self, method: str, url: str, body: Obj, content_type: str) -> int:
        async with self.session.request(
            method, url, data=json.dumps(body), headers={"Content-Type": content_type}
        ) as response:
            text = await response.text()
            if response.status >= 400 and response.status not in (404, 409):
                log.warning("%s %s: %s", method, url, text)
            return response.status

    # -- pods --------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        async with self.session.get(self.pod_url(namespace, name)) as response:
            if response.status != 200:
                return None
            pod: Obj = await response.json()
            return pod

    async def patch_pod_status(self, namespace: str, name: str, status: Obj) -> None:
        await self._send(
            "PATCH",
            self.pod_url(namespace, name, "/status"),
            {"status": status},
            "application/merge-patch+json",
        )

    async def bind(self, namespace: str, name: str) -> bool:
        """POST the pod's binding to this node; False when it is gone or bound already."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        status = await self._send(
            "POST", self.pod_url(namespace, name, "/binding"), binding, "application/json"
        )
        return status < 400

    async def delete_now(self, namespace: str, name: str, uid: str) -> None:
        """Finish a graceful deletion: the node confirms the pod is gone."""
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        await self._send("DELETE", self.pod_url(namespace, name), body, "application/json")

    async def request_token(self, pod: Obj, audience: str, seconds: int) -> tuple[str, Obj]:
        """A token of the pod's ServiceAccount bound to the pod, as the kubelet asks for a
        projected volume (TokenRequest); (token, the API server's answer or error)."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                # No audience: the API server's own (what kube-api-access-* asks for).
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        url = (
            f"{self.api_url}/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        )
        async with self.session.post(url, json=body) as response:
            answer: Obj = await response.json(content_type=None)
        token = (answer.get("status") or {}).get("token") if response.status < 300 else None
        return token or "", answer

    # -- the node ----------------------------------------------------------------------

    async def register_node(self, node: Obj) -> None:
        """Create this node's Node (or keep the one there) and write its status."""
        await self._send("POST", f"{self.api_url}/api/v1/nodes", node, "application/json")
        await self.patch_node_status(node["status"])

    async def patch_node_status(self, status: Obj) -> None:
        await self._send(
            "PATCH",
            f"{self.api_url}/api/v1/nodes/{self.node_name}/status",
            {"status": status},
            "application/merge-patch+json",
        )

    # -- events ------------------------------------------------------------------------

    async def record(
        self,
        obj: Obj,
        type: str,
        reason: str,
        message: str,
        component: str = "kubelet",
        field_path: str = "",
    ) -> None:
        """Post an Event about ``obj`` from ``component``, or count a repeat of one."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], field_path, type, reason, message, component)
        stamp = now()
        seen = self._events.get(key)
        if seen is not None:
            ns, name, count = seen
            self._events[key] = (ns, name, count + 1)
            patch = {"count": count + 1, "lastTimestamp": stamp}
            status = await self._send(
                "PATCH",
                f"{self.api_url}/api/v1/namespaces/{ns}/events/{name}",
                patch,
                "application/merge-patch+json",
            )
            if status < 400:
                return
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
        }
        if field_path:
            involved["fieldPath"] = field_path
        # Named like client-go's recorder, so one object's events list in order.
        name = f"{meta['name']}.{time.time_ns():x}"
        source = {"component": component}
        if component == "kubelet":
            source["host"] = self.node_name
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type,
            "source": source,
            "reportingComponent": component,
            "reportingInstance": self.node_name if component == "kubelet" else "",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
        }
        status = await self._send(
            "POST",
            f"{self.api_url}/api/v1/namespaces/{namespace}/events",
            event,
            "application/json",
        )
        if status < 400:
            if len(self._events) >= _REMEMBERED:
                self._events.pop(next(iter(self._events)))
            self._events[key] = (namespace, name, 1)

    def forget_events(self, uid: str) -> None:
        """Drop what is remembered of a deleted object's events."""
        for key in [k for k in self._events if k[0] == uid]:
            del self._events[key]
