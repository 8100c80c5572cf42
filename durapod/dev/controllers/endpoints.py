"""The Endpoints controller: each Service with a selector gets the addresses of its pods.

As kube-controller-manager's endpoints controller does: the pods the selector picks that
have an IP and have not ended are listed under ``addresses`` when Ready and
``notReadyAddresses`` otherwise (all under ``addresses`` with
``publishNotReadyAddresses``; pods being deleted are left out unless it is set); each
Service port's ``targetPort`` is resolved per pod (a number as is, a name through the
pod's container ports; a pod without that port is left out of it); addresses with the
same ports are packed into one subset (RepackSubsets). The Endpoints carry the Service's
labels (and ``service.kubernetes.io/headless`` for a headless Service). A Service's
Endpoints are deleted with it; Services without a selector keep the Endpoints their
owner writes.

EndpointSlices (``discovery.k8s.io/v1``) are not served by the stand-in: nothing here
reads them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from durapod.dev.controllers.client import (
    ApiError,
    Client,
    Obj,
    selects,
    serve,
    work_queue,
)
from durapod.operator.workqueue import WorkQueue

log = logging.getLogger("durapod.dev.controllers.endpoints")
HEADLESS = "service.kubernetes.io/headless"


def _ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def find_port(pod: Obj, port: Obj) -> int | None:
    """The pod's port a Service port targets (podutil.FindPort), or None."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == target and declared.get("protocol", "TCP") == protocol:
                return int(declared["containerPort"])
    return None


def subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The Endpoints subsets of ``service`` over the namespace's ``pods``."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    # Each address (by IP and pod) → (ready, its ports).
    found: dict[tuple[str, str], tuple[Obj, bool, list[Obj]]] = {}
    for pod in pods:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if pod["metadata"].get("deletionTimestamp") and not publish:
            continue
        if not selects(spec.get("selector") or {}, pod["metadata"].get("labels") or {}):
            continue
        meta = pod["metadata"]
        address: Obj = {
            "ip": ip,
            "targetRef": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if node := pod["spec"].get("nodeName"):
            address["nodeName"] = node
        pod_spec = pod.get("spec") or {}
        if pod_spec.get("hostname") and pod_spec.get("subdomain") == service["metadata"]["name"]:
            address["hostname"] = pod_spec["hostname"]
        ports: list[Obj] = []
        for port in spec.get("ports") or []:
            number = find_port(pod, port)
            if number is None:
                continue
            entry: Obj = {"port": number, "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            if port.get("appProtocol"):
                entry["appProtocol"] = port["appProtocol"]
            ports.append(entry)
        if spec.get("ports") and not ports:
            continue
        found[(ip, meta["uid"])] = (address, publish or _ready(pod), ports)
    # RepackSubsets: addresses with the same ports share a subset.
    groups: dict[str, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for address, ready, ports in found.values():
        ports = sorted(ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))
        key = repr(ports)
        group = groups.setdefault(key, ([], [], ports))
        (group[0] if ready else group[1]).append(address)
    packed = []
    for key in sorted(groups):
        ready_list, unready, ports = groups[key]
        subset: Obj = {}
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=_address_order)
        if unready:
            subset["notReadyAddresses"] = sorted(unready, key=_address_order)
        if ports:
            subset["ports"] = ports
        packed.append(subset)
    return packed


def _address_order(address: Obj) -> tuple[str, str]:
    return address["ip"], address["targetRef"]["uid"]


class EndpointsController:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.queue: WorkQueue[str] = work_queue(self.sync)
        self.synced = asyncio.Event()
        #: Services seen deleted, by namespace: their Endpoints go too.
        self._gone: dict[str, set[str]] = {}

    async def run(self) -> None:
        watches = [
            ("/api/v1/services", self._on_svc, True),
            ("/api/v1/pods", self._on_pod, True),
        ]
        await serve(self.client, self.queue, watches, self.synced)

    def _on_svc(self, event: str, svc: Obj) -> None:
        namespace = svc["metadata"]["namespace"]
        if event == "DELETED":
            self._gone.setdefault(namespace, set()).add(svc["metadata"]["name"])
        self.queue.add(namespace)

    def _on_pod(self, event: str, pod: Obj) -> None:
        self.queue.add(pod["metadata"]["namespace"])

    async def sync(self, namespace: str) -> None:
        base = f"/api/v1/namespaces/{namespace}"
        services = await self.client.list(f"{base}/services")
        names = {s["metadata"]["name"] for s in services}
        for name in sorted(self._gone.pop(namespace, set()) - names):
            await self.client.delete(f"{base}/endpoints/{name}")
        selected = [
            s
            for s in services
            if (s.get("spec") or {}).get("selector")
            and (s.get("spec") or {}).get("type") != "ExternalName"
        ]
        if not selected:
            return
        pods = await self.client.list(f"{base}/pods")
        existing = {e["metadata"]["name"]: e for e in await self.client.list(f"{base}/endpoints")}
        for service in selected:
            await self._write(base, service, pods, existing.get(service["metadata"]["name"]))

    async def _write(self, base: str, service: Obj, pods: list[Obj], current: Obj | None) -> None:
        meta = service["metadata"]
        labels: dict[str, Any] = dict(meta.get("labels") or {})
        if (service.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS] = ""
        wanted = subsets(service, pods)
        if current is not None:
            same_labels = (current["metadata"].get("labels") or {}) == labels
            if same_labels and (current.get("subsets") or []) == wanted:
                return
            body = dict(current)
            body["metadata"] = {**current["metadata"], "labels": labels}
            if not labels:
                del body["metadata"]["labels"]
            body["subsets"] = wanted
            try:
                await self.client.request("PUT", f"{base}/endpoints/{meta['name']}", body)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            return
        body = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "subsets": wanted,
        }
        if labels:
            body["metadata"]["labels"] = labels
        try:
            await self.client.request("POST", f"{base}/endpoints", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
