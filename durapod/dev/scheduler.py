"""The stand-in cluster's scheduler: binds each new pod to the one node when it fits.

Like kube-scheduler it keeps a cache of the pods that hold room on the node (bound
there and not finished, plus those it has just bound and not yet seen bound), tries new
pods in queue order, and leaves a pod that does not fit ``Pending`` with
``PodScheduled=False``, reason ``Unschedulable``, and a ``FailedScheduling`` Event.
Unschedulable pods are tried again only when room may have appeared (a pod on the node
ended or went away) or after five minutes, as the scheduler's unschedulable queue is
flushed: never in a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import aiohttp

from durapod.dev import scheduling
from durapod.dev.nodeapi import NodeApi, now
from durapod.dev.scheduling import Amounts

log = logging.getLogger("durapod.dev.scheduler")
Obj = dict[str, Any]
NAME = "default-scheduler"
#: How long an unschedulable pod waits before it is tried again regardless
#: (kube-scheduler's podMaxInUnschedulablePodsDuration).
RETRY_ALL_SECONDS = 300.0


class Scheduler:
    """Schedules the cluster's pods onto the node ``api`` speaks for."""

    def __init__(self, api: NodeApi, allocatable: Amounts) -> None:
        self.api = api
        self.node = api.node_name
        self.allocatable = allocatable
        #: Pods seen bound to the node and not finished, by uid.
        self.bound: dict[str, Obj] = {}
        self._assumed: dict[str, Obj] = {}
        self._pending: dict[str, Obj] = {}
        self._active: set[str] = set()
        self._told: dict[str, str] = {}
        self._wake = asyncio.Event()

    # -- the cache, fed by the kubelet's pod watch -------------------------------------

    def observe(self, event: str, pod: Obj) -> None:
        """Take in one watch event about a pod."""
        uid = pod["metadata"]["uid"]
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if event == "DELETED" or spec.get("nodeName"):
            self._drop_pending(uid)
            assumed = self._assumed.pop(uid, None)
            held = self.bound.pop(uid, None) or assumed
            if event != "DELETED" and scheduling.occupies(pod, self.node):
                self.bound[uid] = pod
            elif held is not None:
                self._room_freed()
            return
        if (
            uid in self._assumed  # a stale version from before our binding
            or pod["metadata"].get("deletionTimestamp")
            or status.get("phase", "Pending") != "Pending"
            or spec.get("schedulerName", NAME) != NAME
        ):
            self._drop_pending(uid)
            return
        new = uid not in self._pending
        self._pending[uid] = pod
        if new:
            self._active.add(uid)
            self._wake.set()

    def relisted(self, pods: Iterable[Obj]) -> None:
        """After a re-list: forget the pods that went while the watch was down."""
        present = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._pending if u not in present]:
            self._drop_pending(uid)
        gone = [u for u in self.bound if u not in present]
        for uid in gone:
            del self.bound[uid]
        if gone:
            self._room_freed()

    def holding(self) -> list[Obj]:
        """The pods that hold room on the node, counting those just bound."""
        return [*self.bound.values(), *(p for u, p in self._assumed.items() if u not in self.bound)]

    def _drop_pending(self, uid: str) -> None:
        self._pending.pop(uid, None)
        self._active.discard(uid)
        self._told.pop(uid, None)

    def _room_freed(self) -> None:
        # Like the Fit plugin's queueing hint: a pod leaving the node may make any
        # unschedulable pod fit, so all of them go back to the active queue.
        if self._pending:
            self._active.update(self._pending)
            self._wake.set()

    # -- scheduling --------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule until cancelled, waking when there is something to try."""
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel that
            # comes as the event is set, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_ALL_SECONDS):
                    await self._wake.wait()
            if not self._wake.is_set():
                self._active.update(self._pending)
            self._wake.clear()
            batch = sorted(
                (self._pending[u] for u in self._active if u in self._pending),
                key=scheduling.queue_order,
            )
            self._active.clear()
            for pod in batch:
                current = self._pending.get(pod["metadata"]["uid"])
                if current is not None:
                    try:
                        await self._schedule_one(current)
                    except (aiohttp.ClientError, OSError) as exc:
                        log.warning("scheduling pod %s: %s", current["metadata"]["name"], exc)

    async def _schedule_one(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        found = scheduling.shortages(
            scheduling.requested(pod), scheduling.used(self.holding()), self.allocatable
        )
        if found:
            await self._unschedulable(pod, scheduling.unschedulable_message(pod, found))
            return
        self._drop_pending(uid)
        self._assumed[uid] = pod
        if not await self.api.bind(namespace, name):
            self._assumed.pop(uid, None)  # gone, or bound by someone else meanwhile
            self._room_freed()
            return
        log.info("bound pod %s/%s to %s", namespace, name, self.node)

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        """Say why on the pod and in an Event, once per reason (the scheduler writes the
        condition only when it changes; its event series count repeats, not store them)."""
        uid = pod["metadata"]["uid"]
        if self._told.get(uid) == message:
            return
        self._told[uid] = message
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        meta = pod["metadata"]
        await self.api.patch_pod_status(
            meta["namespace"], meta["name"], {"conditions": [condition]}
        )
        await self.api.record(pod, "Warning", "FailedScheduling", message, component=NAME)
