"""The ReplicaSet controller: keeps ``spec.replicas`` pods of the template running.

As kube-controller-manager's does: it creates missing pods (``generateName: <rs>-``,
owned by the ReplicaSet with ``controller: true``, in slow-start batches of 1, 2, 4 …),
deletes extras (unscheduled before scheduled, pending before running, not ready before
ready, the shortest-ready, most-restarted and newest first), replaces pods that are
deleted or end (Succeeded/Failed pods no longer count), records ``SuccessfulCreate``,
``SuccessfulDelete`` and ``FailedCreate`` Events, and reports ``status`` (replicas,
fullyLabeled, ready, available after ``minReadySeconds``, terminating, observedGeneration,
and a ``ReplicaFailure`` condition while pods cannot be created).

Not done: adopting orphaned pods that match the selector, and releasing pods whose labels
stop matching it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Any

from durapod.dev.controllers.client import (
    ApiError,
    Client,
    Obj,
    controller_of,
    now,
    owner_reference,
    parse_time,
    selector_query,
    serve,
    work_queue,
)
from durapod.operator.workqueue import WorkQueue

log = logging.getLogger("durapod.dev.controllers.replicasets")
Key = tuple[str, str]
#: Pods created or deleted in one sync at most (the controller's burstReplicas).
BURST = 500
#: generateName is cut to this before the random suffix (names.MaxGeneratedNameLength).
_MAX_BASE = 58


def active(pod: Obj) -> bool:
    """A pod that counts toward replicas: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def ready_since(pod: Obj) -> float | None:
    """When the pod became Ready (epoch seconds), or None while it is not."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime")) or 0.0
    return None


def available(pod: Obj, min_ready: int, moment: float) -> bool:
    since = ready_since(pod)
    return since is not None and (min_ready <= 0 or since + min_ready <= moment)


def _restarts(pod: Obj) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def deletion_order(pod: Obj) -> tuple[Any, ...]:
    """Sorts the pods to delete first first (controller.ActivePods' ordering)."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    since = ready_since(pod)
    created = parse_time(pod["metadata"].get("creationTimestamp")) or 0.0
    return (
        bool(pod["spec"].get("nodeName")),
        phase_rank,
        since is not None,
        -(since or 0.0),  # ready for less time first
        -_restarts(pod),  # more restarts first
        -created,  # newer first
    )


class ReplicaSetController:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.queue: WorkQueue[Key] = work_queue(self.sync)
        self.synced = asyncio.Event()
        #: Keys whose last pod creation failed: (reason, message) for the condition.
        self._failures: dict[Key, str] = {}

    async def run(self) -> None:
        watches = [
            ("/apis/apps/v1/replicasets", self._on_rs, True),
            ("/api/v1/pods", self._on_pod, True),
        ]
        await serve(self.client, self.queue, watches, self.synced)

    def _on_rs(self, event: str, rs: Obj) -> None:
        self.queue.add((rs["metadata"]["namespace"], rs["metadata"]["name"]))

    def _on_pod(self, event: str, pod: Obj) -> None:
        ref = controller_of(pod)
        if ref and ref.get("kind") == "ReplicaSet" and ref.get("apiVersion") == "apps/v1":
            self.queue.add((pod["metadata"]["namespace"], ref["name"]))

    # -- one ReplicaSet ----------------------------------------------------------------

    async def sync(self, key: Key) -> None:
        namespace, name = key
        rs = await self.client.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets/{name}")
        if rs is None:
            self._failures.pop(key, None)
            return
        uid = rs["metadata"]["uid"]
        selector = selector_query(rs["spec"].get("selector") or {})
        listed = await self.client.list(f"/api/v1/namespaces/{namespace}/pods", selector)
        owned = [p for p in listed if (controller_of(p) or {}).get("uid") == uid]
        running = [p for p in owned if active(p)]
        if not rs["metadata"].get("deletionTimestamp"):
            wanted = int(rs["spec"].get("replicas", 1))
            diff = len(running) - wanted
            if diff < 0:
                made = await self._create(rs, min(-diff, BURST))
                running += made
            elif diff > 0:
                victims = sorted(running, key=deletion_order)[: min(diff, BURST)]
                await self._delete(rs, victims)
                gone = {p["metadata"]["uid"] for p in victims}
                running = [p for p in running if p["metadata"]["uid"] not in gone]
        await self._report(rs, running, owned)

    async def _create(self, rs: Obj, count: int) -> list[Obj]:
        """Create ``count`` pods in batches of 1, 2, 4 … (slowStartBatch); stop at the
        first failure, which is kept for the ReplicaFailure condition and retried."""
        key = (rs["metadata"]["namespace"], rs["metadata"]["name"])
        made: list[Obj] = []
        batch = 1
        while len(made) < count:
            size = min(batch, count - len(made))
            results = await asyncio.gather(
                *(self._create_one(rs) for _ in range(size)), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            made += [r for r in results if not isinstance(r, BaseException)]
            if failed:
                error = failed[0]
                message = (
                    f"{error.body.get('message', error)}"
                    if isinstance(error, ApiError)
                    else str(error)
                )
                self._failures[key] = message
                await self.client.record(
                    rs, "Warning", "FailedCreate", f"Error creating: {message}"
                )
                await self._report(rs, None, None)
                raise error
            batch *= 2
        self._failures.pop(key, None)
        return made

    async def _create_one(self, rs: Obj) -> Obj:
        meta, template = rs["metadata"], copy.deepcopy(rs["spec"]["template"])
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {
            "generateName": f"{meta['name'][:_MAX_BASE]}-",
            "namespace": meta["namespace"],
            "ownerReferences": [owner_reference(rs)],
        }
        for field in ("labels", "annotations", "finalizers"):
            if tmeta.get(field):
                pod_meta[field] = tmeta[field]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}
        made = await self.client.request(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/pods", pod
        )
        await self.client.record(
            rs, "Normal", "SuccessfulCreate", f"Created pod: {made['metadata']['name']}"
        )
        return made

    async def _delete(self, rs: Obj, victims: list[Obj]) -> None:
        for pod in victims:
            meta = pod["metadata"]
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": meta["uid"]},
            }
            try:
                await self.client.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
                )
            except ApiError as exc:
                if exc.status != 409:  # a new pod of the same name: not ours to delete
                    raise
                continue
            await self.client.record(
                rs, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}"
            )

    # -- status ------------------------------------------------------------------------

    async def _report(self, rs: Obj, running: list[Obj] | None, owned: list[Obj] | None) -> None:
        """Write ``status`` when it changed; come back when a ready pod turns available."""
        meta, spec = rs["metadata"], rs["spec"]
        key = (meta["namespace"], meta["name"])
        path = f"/apis/apps/v1/namespaces/{meta['namespace']}/replicasets/{meta['name']}"
        current = await self.client.get(path)
        if current is None:
            return
        old = current.get("status") or {}
        status: Obj = dict(old)
        moment = time.time()
        if running is not None and owned is not None:
            min_ready = int(spec.get("minReadySeconds") or 0)
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            ready = [p for p in running if ready_since(p) is not None]
            avail = [p for p in ready if available(p, min_ready, moment)]
            labelled = [
                p
                for p in running
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
            terminating = [
                p
                for p in owned
                if p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            status.update(
                replicas=len(running),
                fullyLabeledReplicas=len(labelled),
                readyReplicas=len(ready),
                availableReplicas=len(avail),
                terminatingReplicas=len(terminating),
                observedGeneration=meta.get("generation", 1),
            )
            waiting = [
                (ready_since(p) or 0.0) + min_ready - moment for p in ready if p not in avail
            ]
            if waiting:
                self.queue.add_after(key, max(min(waiting), 0.0) + 0.05)
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if (failure := self._failures.get(key)) is not None:
            before: Obj = next(
                (c for c in old.get("conditions") or [] if c.get("type") == "ReplicaFailure"), {}
            )
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": failure,
                    "lastTransitionTime": before.get("lastTransitionTime") or now(),
                }
            )
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        if status == old:
            return
        current["status"] = status
        await self.client.request("PUT", f"{path}/status", current)
