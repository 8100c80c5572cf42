"""The Deployment controller: a Deployment's template runs as ReplicaSets, rolled out.

Minimal but real, after kube-controller-manager's (pkg/controller/deployment):

- The template's ReplicaSet is ``<deployment>-<pod-template-hash>``; the hash is FNV-32a
  over the template (here its canonical JSON, upstream its Go dump, so the values differ)
  and ``status.collisionCount``, encoded as upstream encodes it. The label
  ``pod-template-hash`` goes on the ReplicaSet, its selector and its pods; the ReplicaSet
  is owned by the Deployment (``controller: true``), so deleting the Deployment collects
  it and its pods.
- ``RollingUpdate`` scales the new ReplicaSet up within ``maxSurge`` and the old ones down
  as new pods become available, never below ``replicas - maxUnavailable`` available;
  ``Recreate`` scales the old ones to zero, waits for their pods to end, then scales the
  new one up. A change of ``spec.replicas`` scales the ReplicaSets; ``spec.paused`` stops
  rollouts; old ReplicaSets past ``revisionHistoryLimit`` are deleted.
- ``deployment.kubernetes.io/revision`` on the ReplicaSets and the Deployment (a rollback
  to an earlier template takes the next revision), ``desired-replicas`` and
  ``max-replicas``; ``ScalingReplicaSet`` Events.
- ``status``: observedGeneration, replicas, updated/ready/available/unavailable/
  terminating replicas, and the ``Available`` (MinimumReplicasAvailable/
  MinimumReplicasUnavailable) and ``Progressing`` (NewReplicaSetCreated,
  ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded) conditions that
  ``kubectl rollout status`` and ``helm install --wait`` read.

Not done: proportional scaling of several live ReplicaSets during a rollout (the rolling
update converges instead), adoption of orphaned ReplicaSets.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
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

log = logging.getLogger("durapod.dev.controllers.deployments")
Key = tuple[str, str]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
#: Annotations of the Deployment not copied to its ReplicaSets (skipCopyAnnotation).
_NOT_COPIED = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
)
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Obj, collisions: int = 0) -> str:
    """The ``pod-template-hash`` of a template (controller.ComputeHash's shape)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collisions:
        data += collisions.to_bytes(4, "little")
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in str(value).encode())


def _without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return out


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(rs: Obj) -> int:
    return int(rs["spec"].get("replicas", 0))


def _status(rs: Obj | None, field: str) -> int:
    return int(((rs or {}).get("status") or {}).get(field) or 0)


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def surge_and_unavailable(d: Obj) -> tuple[int, int]:
    """maxSurge and maxUnavailable as numbers (deploymentutil.ResolveFenceposts)."""
    spec = d["spec"]
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


class DeploymentController:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.queue: WorkQueue[Key] = work_queue(self.sync)
        self.synced = asyncio.Event()

    async def run(self) -> None:
        watches = [
            ("/apis/apps/v1/deployments", self._on_d, True),
            ("/apis/apps/v1/replicasets", self._on_rs, True),
            ("/api/v1/pods", self._on_pod, False),
        ]
        await serve(self.client, self.queue, watches, self.synced)

    def _on_d(self, event: str, d: Obj) -> None:
        self.queue.add((d["metadata"]["namespace"], d["metadata"]["name"]))

    def _on_rs(self, event: str, rs: Obj) -> None:
        ref = controller_of(rs)
        if ref and ref.get("kind") == "Deployment":
            self.queue.add((rs["metadata"]["namespace"], ref["name"]))

    def _on_pod(self, event: str, pod: Obj) -> None:
        # A Recreate rollout waits for the old pods to be gone.
        if event == "DELETED" and (ref := controller_of(pod)) and ref.get("kind") == "ReplicaSet":
            name = ref["name"].rsplit("-", 1)[0]
            self.queue.add((pod["metadata"]["namespace"], name))

    # -- one Deployment ----------------------------------------------------------------

    def _path(self, namespace: str, name: str = "", kind: str = "deployments") -> str:
        path = f"/apis/apps/v1/namespaces/{namespace}/{kind}"
        return f"{path}/{name}" if name else path

    async def sync(self, key: Key) -> None:
        namespace, name = key
        d = await self.client.get(self._path(namespace, name))
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        uid = d["metadata"]["uid"]
        selector = selector_query(d["spec"].get("selector") or {})
        listed = await self.client.list(self._path(namespace, kind="replicasets"), selector)
        owned = [rs for rs in listed if (controller_of(rs) or {}).get("uid") == uid]
        template = _without_hash(d["spec"]["template"])
        matching = [rs for rs in owned if _without_hash(rs["spec"]["template"]) == template]
        matching.sort(key=lambda rs: rs["metadata"].get("creationTimestamp", ""))
        new = matching[0] if matching else None
        olds = [rs for rs in owned if rs is not new]
        created = False
        if not d["spec"].get("paused"):
            if new is None:
                new = await self._create_new(d, olds)
                if new is None:
                    return  # a hash collision was counted; synced again
                created = True
            else:
                new = await self._mark_revision(d, new, olds)
            if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
                await self._recreate(d, new, olds)
            else:
                await self._rolling(d, new, olds)
            await self._cleanup(d, olds)
        elif new is not None:
            await self._scale(d, new, int(d["spec"].get("replicas", 1)))
        owned = [
            rs
            for rs in await self.client.list(self._path(namespace, kind="replicasets"), selector)
            if (controller_of(rs) or {}).get("uid") == uid
        ]
        new = next(
            (rs for rs in owned if new and rs["metadata"]["uid"] == new["metadata"]["uid"]), None
        )
        await self._report(d, new, owned, created)

    async def _create_new(self, d: Obj, olds: list[Obj]) -> Obj | None:
        meta, spec = d["metadata"], d["spec"]
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        hashed = template_hash(_without_hash(spec["template"]), collisions)
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = hashed
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = hashed
        replicas = int(spec.get("replicas", 1))
        surge, _ = surge_and_unavailable(d)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            start = 0 if any(_replicas(rs) or _status(rs, "replicas") for rs in olds) else replicas
        else:
            current = sum(_replicas(rs) for rs in olds)
            start = max(min(replicas + surge - current, replicas), 0)
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED
        }
        annotations.update(
            {
                REVISION: str(max((_revision(rs) for rs in olds), default=0) + 1),
                DESIRED: str(replicas),
                MAX_REPLICAS: str(replicas + surge),
            }
        )
        name = f"{meta['name']}-{hashed}"
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [owner_reference(d)],
            },
            "spec": {
                "replicas": start,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            made = await self.client.request(
                "POST", self._path(meta["namespace"], kind="replicasets"), rs
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            existing = await self.client.get(self._path(meta["namespace"], name, "replicasets"))
            if (
                existing is not None
                and (controller_of(existing) or {}).get("uid") == meta["uid"]
                and _without_hash(existing["spec"]["template"]) == _without_hash(spec["template"])
            ):
                return existing
            # Another template (or another owner) has this name: count a collision.
            d["status"] = {**(d.get("status") or {}), "collisionCount": collisions + 1}
            await self.client.request(
                "PUT", self._path(meta["namespace"], meta["name"]) + "/status", d
            )
            return None
        if start > 0:
            message = f"Scaled up replica set {name} from 0 to {start}"
            await self.client.record(d, "Normal", "ScalingReplicaSet", message)
        return made

    async def _mark_revision(self, d: Obj, new: Obj, olds: list[Obj]) -> Obj:
        """The ReplicaSet of the current template holds the newest revision (a rollback to
        an older template moves it up)."""
        wanted = max((_revision(rs) for rs in olds), default=0) + 1
        if _revision(new) >= wanted:
            return new
        meta = new["metadata"]
        return await self.client.merge_patch(
            self._path(meta["namespace"], meta["name"], "replicasets"),
            {"metadata": {"annotations": {REVISION: str(wanted)}}},
        )

    async def _scale(self, d: Obj, rs: Obj, replicas: int) -> Obj:
        old = _replicas(rs)
        surge, _ = surge_and_unavailable(d)
        wanted = int(d["spec"].get("replicas", 1))
        notes = rs["metadata"].get("annotations") or {}
        marks = {DESIRED: str(wanted), MAX_REPLICAS: str(wanted + surge)}
        if old == replicas and all(notes.get(k) == v for k, v in marks.items()):
            return rs
        meta = rs["metadata"]
        scaled = await self.client.merge_patch(
            self._path(meta["namespace"], meta["name"], "replicasets"),
            {"metadata": {"annotations": marks}, "spec": {"replicas": replicas}},
        )
        if old != replicas:
            direction = "up" if replicas > old else "down"
            await self.client.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {meta['name']} from {old} to {replicas}",
            )
        return scaled

    async def _recreate(self, d: Obj, new: Obj, olds: list[Obj]) -> None:
        """Old ReplicaSets to zero, their pods gone, then the new one up."""
        for rs in olds:
            if _replicas(rs):
                await self._scale(d, rs, 0)
        if olds:
            namespace = d["metadata"]["namespace"]
            selector = selector_query(d["spec"].get("selector") or {})
            old_uids = {rs["metadata"]["uid"] for rs in olds}
            pods = await self.client.list(f"/api/v1/namespaces/{namespace}/pods", selector)
            if any(
                (controller_of(p) or {}).get("uid") in old_uids
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                for p in pods
            ):
                return  # their deletions bring this Deployment back
        await self._scale(d, new, int(d["spec"].get("replicas", 1)))

    async def _rolling(self, d: Obj, new: Obj, olds: list[Obj]) -> None:
        """rolloutRolling: the new ReplicaSet up within maxSurge, the old ones down while
        at least replicas - maxUnavailable stay available."""
        replicas = int(d["spec"].get("replicas", 1))
        surge, unavailable = surge_and_unavailable(d)
        # reconcileNewReplicaSet
        size = _replicas(new)
        if size > replicas:
            new = await self._scale(d, new, replicas)
        elif size < replicas:
            total = _replicas(new) + sum(_replicas(rs) for rs in olds)
            up = min(replicas + surge - total, replicas - size)
            if up > 0:
                new = await self._scale(d, new, size + up)
        else:
            new = await self._scale(d, new, size)  # annotations only
        # reconcileOldReplicaSets
        live = [rs for rs in olds if _replicas(rs)]
        if not live:
            return
        total = _replicas(new) + sum(_replicas(rs) for rs in live)
        min_available = replicas - unavailable
        new_unavailable = _replicas(new) - _status(new, "availableReplicas")
        budget = total - min_available - new_unavailable
        if budget <= 0:
            return
        live.sort(key=lambda rs: rs["metadata"].get("creationTimestamp", ""))
        # First the old pods that are not available anyway (cleanupUnhealthyReplicas).
        for i, rs in enumerate(live):
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            cut = min(max(unhealthy, 0), budget)
            if cut > 0:
                live[i] = await self._scale(d, rs, _replicas(rs) - cut)
                budget -= cut
        # Then available old pods, while enough stay available.
        available = _status(new, "availableReplicas") + sum(
            _status(rs, "availableReplicas") for rs in live
        )
        spare = min(available - min_available, budget)
        for rs in live:
            if spare <= 0:
                break
            cut = min(_replicas(rs), spare)
            if cut > 0:
                await self._scale(d, rs, _replicas(rs) - cut)
                spare -= cut

    async def _cleanup(self, d: Obj, olds: list[Obj]) -> None:
        """Delete old, empty ReplicaSets beyond revisionHistoryLimit, oldest first."""
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        empty = [
            rs
            for rs in olds
            if not _replicas(rs)
            and not _status(rs, "replicas")
            and not rs["metadata"].get("deletionTimestamp")
        ]
        empty.sort(key=_revision)
        for rs in empty[: max(len(empty) - limit, 0)]:
            meta = rs["metadata"]
            await self.client.delete(self._path(meta["namespace"], meta["name"], "replicasets"))

    # -- status ------------------------------------------------------------------------

    async def _report(self, d: Obj, new: Obj | None, owned: list[Obj], created: bool) -> None:
        meta, spec = d["metadata"], d["spec"]
        key = (meta["namespace"], meta["name"])
        path = self._path(meta["namespace"], meta["name"])
        current = await self.client.get(path)
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return
        if new is not None and (
            revision := (new["metadata"].get("annotations") or {}).get(REVISION)
        ):
            notes = current["metadata"].get("annotations") or {}
            if notes.get(REVISION) != revision:
                current = await self.client.merge_patch(
                    path, {"metadata": {"annotations": {REVISION: revision}}}
                )
        replicas = int(spec.get("replicas", 1))
        old = current.get("status") or {}
        status: Obj = {k: v for k, v in old.items() if k in ("collisionCount",)}
        total = sum(_status(rs, "replicas") for rs in owned)
        avail = sum(_status(rs, "availableReplicas") for rs in owned)
        status.update(
            observedGeneration=meta.get("generation", 1),
            replicas=total,
            updatedReplicas=_status(new, "replicas"),
            readyReplicas=sum(_status(rs, "readyReplicas") for rs in owned),
            availableReplicas=avail,
            unavailableReplicas=max(replicas - avail, 0),
            terminatingReplicas=sum(_status(rs, "terminatingReplicas") for rs in owned),
        )
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "replicas")}
        _, unavailable = surge_and_unavailable(current)
        conditions = [dict(c) for c in old.get("conditions") or []]
        if avail >= replicas - unavailable:
            reason, message = "MinimumReplicasAvailable", "Deployment has minimum availability."
            _set(conditions, "Available", "True", reason, message)
        else:
            reason = "MinimumReplicasUnavailable"
            message = "Deployment does not have minimum availability."
            _set(conditions, "Available", "False", reason, message)
        name = new["metadata"]["name"] if new else ""
        if created:
            message = f'Created new replica set "{name}"'
            _set(conditions, "Progressing", "True", "NewReplicaSetCreated", message)
        self._progress(key, spec, old, status, conditions, name)
        status["conditions"] = conditions
        if status == old:
            return
        current["status"] = status
        await self.client.request("PUT", f"{path}/status", current)

    def _progress(
        self, key: Key, spec: Obj, old: Obj, status: Obj, conditions: list[Obj], name: str
    ) -> None:
        """The Progressing condition, as syncRolloutStatus sets it; a rollout still under
        way is looked at again when its progress deadline would pass."""
        replicas = int(spec.get("replicas", 1))
        progressing = next((c for c in conditions if c["type"] == "Progressing"), None)
        deadline = spec.get("progressDeadlineSeconds")
        updated = _count(status, "updatedReplicas")
        old_olds = _count(old, "replicas") - _count(old, "updatedReplicas")
        new_olds = _count(status, "replicas") - updated
        if spec.get("paused"):
            _set(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif not name:
            pass
        elif (
            updated == replicas == _count(status, "replicas") == _count(status, "availableReplicas")
        ):
            message = f'ReplicaSet "{name}" has successfully progressed.'
            _set(conditions, "Progressing", "True", "NewReplicaSetAvailable", message)
        elif (
            updated > _count(old, "updatedReplicas")
            or new_olds < old_olds
            or _count(status, "readyReplicas") > _count(old, "readyReplicas")
            or _count(status, "availableReplicas") > _count(old, "availableReplicas")
        ):
            # Progress: lastUpdateTime moves even when the reason stays the same.
            kept = [c for c in conditions if c["type"] != "Progressing"]
            conditions[:] = kept
            message = f'ReplicaSet "{name}" is progressing.'
            _set(conditions, "Progressing", "True", "ReplicaSetUpdated", message)
            if progressing is not None and progressing.get("status") == "True":
                since = progressing.get("lastTransitionTime")
                conditions[-1]["lastTransitionTime"] = since or conditions[-1]["lastUpdateTime"]
        elif (
            deadline is not None
            and progressing is not None
            and progressing.get("reason") != "NewReplicaSetAvailable"
            and (
                progressing.get("reason") == "ProgressDeadlineExceeded"
                or time.time()
                > (parse_time(progressing.get("lastUpdateTime")) or 0.0) + int(deadline)
            )
        ):
            message = f'ReplicaSet "{name}" has timed out progressing.'
            _set(conditions, "Progressing", "False", "ProgressDeadlineExceeded", message)
        progressing = next((c for c in conditions if c["type"] == "Progressing"), None)
        if (
            progressing is not None
            and progressing.get("status") == "True"
            and progressing.get("reason") != "NewReplicaSetAvailable"
            and deadline is not None
        ):
            since = parse_time(progressing.get("lastUpdateTime")) or time.time()
            self.queue.add_after(key, max(since + int(deadline) - time.time(), 0.0) + 1.0)


def _count(status: Obj, field: str) -> int:
    return int(status.get(field) or 0)


def _set(conditions: list[Obj], kind: str, state: str, reason: str, message: str) -> None:
    """SetDeploymentCondition: a condition of the same status and reason stays as it is;
    otherwise it is replaced, keeping lastTransitionTime while the status is the same."""
    stamp = now()
    fresh = {
        "type": kind,
        "status": state,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }
    for i, current in enumerate(conditions):
        if current.get("type") != kind:
            continue
        if current.get("status") == state and current.get("reason") == reason:
            return
        if current.get("status") == state:
            fresh["lastTransitionTime"] = current.get("lastTransitionTime") or stamp
        conditions[i] = fresh
        return
    conditions.append(fresh)
