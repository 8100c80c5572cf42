"""A subprocess "kubelet": the one node of the stand-in cluster, and its scheduler.

It registers its Node, watches Pods through the API server like a node does, schedules
new ones against the node's allocatable cpu, memory and pod count (see
:mod:`durapod.dev.scheduler`), and runs each pod bound to it as a local process:
Pending → Running → Succeeded/Failed with exit codes and container states, the log
where the API server serves ``pods/log`` from. A pod that names the node itself passes
the kubelet's own admission check or is rejected (``OutOfmemory``). It behaves as a node
on the bad days: a memory watchdog OOM-kills a pod over its limit (SIGKILL,
``OOMKilled``, 137), :meth:`Kubelet.evict` does a node-pressure eviction
(DisruptionTarget, SIGTERM, SIGKILL after the grace period, ``Failed``/``Evicted``), and
a pod deleted gracefully gets SIGTERM, then SIGKILL when its grace period runs out.

Images are not pulled: a known image stands for a local environment (see
:mod:`durapod.dev.images`); any other image waits in ``ErrImagePull`` and
``ImagePullBackOff``, with the kubelet's Events, and never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from durapod.dev import images, node, scheduling
from durapod.dev.apiserver import pods
from durapod.dev.apiserver.server import log_file_name
from durapod.dev.nodeapi import NodeApi
from durapod.dev.nodeapi import now as _now
from durapod.dev.scheduler import Scheduler
from durapod.dev.volumes import MountError, Volumes, translate

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
WATCHDOG_SECONDS = 0.1
#: How often the kubelet posts its Node's status when nothing changes
#: (nodeStatusReportFrequency).
NODE_STATUS_SECONDS = 300.0
#: The pod's and its host's addresses: every pod shares the machine's loopback.
_ADDRESSES = {
    "hostIP": "127.0.0.1",
    "hostIPs": [{"ip": "127.0.0.1"}],
    "podIP": "127.0.0.1",
    "podIPs": [{"ip": "127.0.0.1"}],
}


@dataclass(frozen=True)
class NodeSettings:
    """The stand-in node: its name, its size, the images it has, how pulls back off."""

    #: The Node's name, and ``spec.nodeName`` of the pods it runs.
    name: str = "durapod-dev"
    #: cpu, memory and pods the node reports as capacity; what is not given is this
    #: machine's (its CPUs, its memory, 110 pods).
    capacity: Mapping[str, str] = field(default_factory=dict)
    #: What the node keeps back from pods: allocatable is capacity less this. By
    #: default the kubelet's hard eviction threshold, memory.available<100Mi.
    reserved: Mapping[str, str] = field(default_factory=lambda: dict(scheduling.EVICTION_RESERVE))
    #: Images beside ``durapod:dev``: each name → the bin directory of the environment
    #: it stands for (put first on the container's PATH). Names match as a runtime
    #: matches them: ``nope:1`` is ``docker.io/library/nope:1``; no tag is ``:latest``.
    images: Mapping[str, Path] = field(default_factory=dict)
    #: The first wait after a failed image pull; each failure doubles it (10s upstream).
    image_back_off: timedelta = timedelta(seconds=10)
    #: The longest wait between image pulls (300s upstream).
    image_back_off_max: timedelta = timedelta(seconds=300)


@dataclass(eq=False)
class Container:
    """One running pod process and what the node knows about it."""

    namespace: str
    name: str
    uid: str
    process: asyncio.subprocess.Process
    started_at: str
    memory_limit: int | None
    killed_for: str | None = None  # OOMKilled | Evicted | Deleted | DeadlineExceeded
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Kubelet:
    def __init__(
        self,
        api_url: str,
        token: str,
        log_dir: Path,
        workdir: Path,
        settings: NodeSettings | None = None,
    ) -> None:
        self.settings = settings or NodeSettings()
        self.api_url = api_url
        self.token = token
        self.log_dir = log_dir
        self.workdir = workdir
        self.node_name = self.settings.name
        self.capacity = scheduling.Amounts.of({**node.machine_capacity(), **self.settings.capacity})
        self.allocatable = self.capacity - scheduling.Amounts.of(self.settings.reserved)
        self.images = images.Images({**images.default_images(), **self.settings.images})
        self.api = NodeApi(api_url, token, self.node_name)
        self.volumes = Volumes(self.api, log_dir.parent / "kubelet-pods")
        self.scheduler = Scheduler(self.api, self.allocatable)
        self.containers: dict[str, Container] = {}
        self._admitted: set[str] = set()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._back_off = images.BackOff(
            self.settings.image_back_off.total_seconds(),
            self.settings.image_back_off_max.total_seconds(),
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _patch_status(self, c: Container, status: Obj) -> None:
        await self.api.patch_pod_status(c.namespace, c.name, status)

    # -- the node ----------------------------------------------------------------------

    async def _post_node_status(self) -> None:
        """Register the Node, then re-post its status as a kubelet's heartbeat does."""
        since = _now()
        registered = False
        while True:
            try:
                status = node.node_object(
                    self.node_name,
                    self.capacity,
                    self.allocatable,
                    self.images.node_status(),
                    since,
                    _now(),
                )
                if registered:
                    await self.api.patch_node_status(status["status"])
                else:
                    await self.api.register_node(status)
                    registered = True
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("posting the node's status: %s; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            await asyncio.sleep(NODE_STATUS_SECONDS)

    # -- watching pods -----------------------------------------------------------------

    async def run(self) -> None:
        """Register the node, schedule, and list and watch pods until cancelled,
        re-listing whenever the watch ends."""
        self._spawn(self._post_node_status())
        self._spawn(self.scheduler.run())
        session = self.api.session
        while True:
            try:
                async with session.get(f"{self.api_url}/api/v1/pods") as response:
                    listing = await response.json()
                self.scheduler.relisted(listing["items"])
                present = {p["metadata"]["uid"] for p in listing["items"]}
                for uid in [u for u in self._admitted if u not in present]:
                    await self._on_pod("DELETED", {"metadata": {"uid": uid}})  # missed
                for pod in listing["items"]:
                    await self._on_pod("ADDED", pod)
                rv = listing["metadata"]["resourceVersion"]
                url = (
                    f"{self.api_url}/api/v1/pods?watch=true&resourceVersion={rv}"
                    "&allowWatchBookmarks=true&timeoutSeconds=300"
                )
                async with session.get(url, timeout=aiohttp.ClientTimeout()) as response:
                    async for line in response.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break
                        if event["type"] != "BOOKMARK":
                            await self._on_pod(event["type"], event["object"])
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("watching pods: %s; retrying", exc)
                await asyncio.sleep(0.5)

    async def _on_pod(self, event: str, pod: Obj) -> None:
        self.scheduler.observe(event, pod)
        meta = pod["metadata"]
        uid = meta["uid"]
        running = self.containers.get(uid)
        if event == "DELETED":
            self._forget(uid)
            if running and running.process.returncode is None:
                running.killed_for = running.killed_for or "Deleted"
                _kill(running, signal.SIGKILL)
            return
        node_name = pod["spec"].get("nodeName")
        if meta.get("deletionTimestamp"):
            if running and running.process.returncode is None:
                grace = int(meta.get("deletionGracePeriodSeconds") or 0)
                self._spawn(self._terminate(running, grace, "Deleted"))
            elif running is None and node_name in (None, self.node_name):
                self._stop_pulling(uid)
                await self.api.delete_now(meta["namespace"], meta["name"], uid)
            return
        phase = pod.get("status", {}).get("phase")
        if node_name == self.node_name and uid not in self._admitted and phase == "Pending":
            self._admit(pod)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, uid: str) -> None:
        self._stop_pulling(uid)
        self.volumes.unmount(uid)
        self._admitted.discard(uid)
        self.api.forget_events(uid)

    def _stop_pulling(self, uid: str) -> None:
        task = self._pulls.pop(uid, None)
        if task is not None:
            task.cancel()

    # -- admission and images ----------------------------------------------------------

    def _admit(self, pod: Obj) -> None:
        """The kubelet's admission: a pod bound here runs only if the node has room for
        it beside the pods it already runs (the scheduler made sure for its own)."""
        uid = pod["metadata"]["uid"]
        others = [p for u, p in self.scheduler.bound.items() if u != uid and u in self._admitted]
        found = scheduling.shortages(
            scheduling.requested(pod), scheduling.used(others), self.allocatable
        )
        self._admitted.add(uid)
        if found:
            self._spawn(self._reject(pod, *scheduling.rejection(found)))
            return
        container = pod["spec"]["containers"][0]
        environment = self.images.find(container.get("image") or "")
        if environment is None:
            self._pulls[uid] = self._spawn(self._pull_back_off(pod, container))
        else:
            self._spawn(self._start(pod, environment))

    async def _reject(self, pod: Obj, reason: str, message: str) -> None:
        meta = pod["metadata"]
        log.info("rejected pod %s/%s: %s", meta["namespace"], meta["name"], message)
        await self.api.record(pod, "Warning", reason, message)
        await self.api.patch_pod_status(
            meta["namespace"],
            meta["name"],
            {"phase": "Failed", "reason": reason, "message": f"Pod was rejected: {message}"},
        )

    async def _pull_back_off(self, pod: Obj, container: Obj) -> None:
        """An image this node cannot have: ErrImagePull, then ImagePullBackOff while the
        back-off lasts, then another try, as the kubelet's image manager does. Runs until
        the pod is deleted."""
        image = images.with_default_tag(container.get("image") or "")
        ref = f"spec.containers{{{container['name']}}}"
        started = _now()
        shown: tuple[str, str] | None = None

        async def wait(reason: str, message: str) -> None:
            nonlocal shown
            if shown != (reason, message):
                shown = (reason, message)
                await self._report_waiting(pod, container, started, reason, message)
            await self.api.record(pod, "Warning", "Failed", f"Error: {reason}", field_path=ref)

        if images.pull_policy(container) == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            await self.api.record(pod, "Warning", "ErrImageNeverPull", message, field_path=ref)
            await wait("ErrImageNeverPull", message)
            return
        key = f"{pod['metadata']['uid']}_{image}"
        error = images.pull_error(image)
        # The pod worker syncs a pod that failed to start again after a while; half the
        # base back-off shows ImagePullBackOff between two pulls, as on a node.
        sync = self._back_off.base / 2
        loop = asyncio.get_running_loop()
        try:
            while True:
                moment = loop.time()
                if self._back_off.in_back_off(key, moment):
                    await self.api.record(
                        pod,
                        "Normal",
                        "BackOff",
                        f'Back-off pulling image "{image}"',
                        field_path=ref,
                    )
                    await wait(
                        "ImagePullBackOff",
                        f'Back-off pulling image "{image}": ErrImagePull: {error}',
                    )
                    left = self._back_off.until(key) - loop.time()
                    await asyncio.sleep(max(0.0, min(sync, left)) + 0.001)
                    continue
                await self.api.record(
                    pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path=ref
                )
                await self.api.record(
                    pod,
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": {error}',
                    field_path=ref,
                )
                self._back_off.next(key, loop.time())
                await wait("ErrImagePull", error)
                await asyncio.sleep(sync)
        finally:
            self._back_off.forget(key)

    async def _report_waiting(
        self, pod: Obj, container: Obj, started: str, reason: str, message: str
    ) -> None:
        meta = pod["metadata"]
        await self.api.patch_pod_status(
            meta["namespace"],
            meta["name"],
            {
                "phase": "Pending",
                "startTime": started,
                **_ADDRESSES,
                "conditions": _conditions(ready=False, unready=[container["name"]]),
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ],
            },
        )

    # -- the pod lifecycle -------------------------------------------------------------

    async def _mount(self, pod: Obj) -> dict[str, Path] | None:
        """The pod's volumes, tried again with back-off while one cannot be set up (a
        missing ServiceAccount, say); None once the pod is gone meanwhile."""
        delay = 1.0
        while pod["metadata"]["uid"] in self._admitted:
            try:
                return await self.volumes.mount(pod)
            except MountError as exc:
                await self.api.record(pod, "Warning", "FailedMount", str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        return None

    async def _start(self, pod: Obj, environment: Path) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        dirs = await self._mount(pod)
        if dirs is None:
            return
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / log_file_name(meta["namespace"], meta["name"], meta["uid"])
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *(container.get("command") or []),
                *(container.get("args") or []),
                env=self._env(pod, container, environment, dirs),
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        c = Container(
            meta["namespace"],
            meta["name"],
            meta["uid"],
            process,
            _now(),
            _bytes(limit),
        )
        self.containers[meta["uid"]] = c
        if meta["uid"] not in self._admitted:  # deleted while it was starting
            c.killed_for = "Deleted"
            _kill(c, signal.SIGKILL)
        log.info("started pod %s/%s as pid %d", c.namespace, c.name, process.pid)
        await self._patch_status(
            c,
            {
                "phase": "Running",
                "startTime": c.started_at,
                **_ADDRESSES,
                "conditions": _conditions(ready=True),
                "containerStatuses": [
                    self._container_status(
                        container, c, {"running": {"startedAt": c.started_at}}, ready=True
                    )
                ],
            },
        )
        guards = []
        if c.memory_limit:
            guards.append(asyncio.create_task(self._watch_memory(c)))
        if (deadline := spec.get("activeDeadlineSeconds")) is not None:
            grace = float(spec.get("terminationGracePeriodSeconds", 30))
            guards.append(asyncio.create_task(self._deadline(c, float(deadline), grace)))
        code = await process.wait()
        for guard in guards:
            guard.cancel()
        await self._report_exit(pod, container, c, code)
        self.volumes.unmount(meta["uid"])
        c.done.set()

    def _env(
        self, pod: Obj, container: Obj, environment: Path, dirs: dict[str, Path]
    ) -> dict[str, str]:
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": self.node_name,
        }
        env = {
            "PATH": f"{environment}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": pod["metadata"]["name"],
        }
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            value = fields.get(ref, "") if ref else str(var.get("value", ""))
            env[var["name"]] = translate(container, dirs, value)
        return env

    def _container_status(self, container: Obj, c: Container, state: Obj, ready: bool) -> Obj:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"subprocess://{c.process.pid}",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
        }

    async def _report_exit(self, pod: Obj, container: Obj, c: Container, code: int) -> None:
        exit_code = 128 - code if code < 0 else code
        reason = {"OOMKilled": "OOMKilled"}.get(
            c.killed_for or "", "Completed" if code == 0 else "Error"
        )
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": c.started_at,
            "finishedAt": _now(),
            "containerID": f"subprocess://{c.process.pid}",
        }
        if code < 0:
            terminated["signal"] = -code
        status: Obj = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": _conditions(ready=False, evicted=c.killed_for == "Evicted")
            + await self._disruption_conditions(c),
            "containerStatuses": [
                self._container_status(container, c, {"terminated": terminated}, False)
            ],
        }
        if c.killed_for == "DeadlineExceeded":
            status.update(
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
        if c.killed_for == "Evicted":
            status.update(
                reason="Evicted",
                message="The node was low on resource: memory. Container "
                f"{container['name']} was using too much memory.",
            )
        log.info("pod %s/%s exited %d (%s)", c.namespace, c.name, exit_code, reason)
        await self._patch_status(c, status)
        if c.killed_for == "Deleted":
            await self.api.delete_now(c.namespace, c.name, c.uid)

    async def _disruption_conditions(self, c: Container) -> list[Obj]:
        """DisruptionTarget conditions others set (the Eviction API): a node keeps them."""
        current = await self.api.get_pod(c.namespace, c.name)
        if current is None:
            return []
        return [
            cond
            for cond in (current.get("status") or {}).get("conditions") or []
            if cond.get("type") == "DisruptionTarget" and c.killed_for != "Evicted"
        ]

    async def _terminate(self, c: Container, grace: float, why: str) -> None:
        """SIGTERM, then SIGKILL once ``grace`` seconds have passed."""
        c.killed_for = c.killed_for or why
        _kill(c, signal.SIGTERM)
        try:
            await asyncio.wait_for(c.process.wait(), grace)
        except TimeoutError:
            _kill(c, signal.SIGKILL)
        await c.done.wait()

    async def _deadline(self, c: Container, seconds: float, grace: float) -> None:
        """spec.activeDeadlineSeconds: past it the pod is stopped as DeadlineExceeded."""
        await asyncio.sleep(seconds)
        await self._terminate(c, grace, "DeadlineExceeded")

    async def evict(self, namespace: str, name: str, grace: float = 30) -> None:
        """Node-pressure eviction of a running pod, as the kubelet does under memory pressure."""
        c = self._find(namespace, name)
        await self._patch_status(
            c,
            {
                "conditions": [
                    *_conditions(ready=True),
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "TerminationByKubelet",
                        "message": "The node was low on resource: memory.",
                        "lastTransitionTime": _now(),
                        "lastProbeTime": None,
                    },
                ]
            },
        )
        await self._terminate(c, grace, "Evicted")

    def _find(self, namespace: str, name: str) -> Container:
        for c in self.containers.values():
            if (c.namespace, c.name) == (namespace, name) and c.process.returncode is None:
                return c
        raise LookupError(f"no running pod {namespace}/{name} on this node")

    async def _watch_memory(self, c: Container) -> None:
        assert c.memory_limit is not None
        while c.process.returncode is None:
            if _group_rss(c.process.pid) > c.memory_limit:
                log.info("pod %s/%s over its memory limit: OOM kill", c.namespace, c.name)
                c.killed_for = "OOMKilled"
                _kill(c, signal.SIGKILL)
                return
            await asyncio.sleep(WATCHDOG_SECONDS)

    async def stop(self) -> None:
        """Kill every pod process (the node goes away) and close the API session."""
        for c in self.containers.values():
            if c.process.returncode is None:
                _kill(c, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    await c.process.wait()
        for task in list(self._tasks):
            task.cancel()
        await self.api.close()


def _bytes(limit: Any) -> int | None:
    """A memory limit in bytes (None: no limit, or one the API server would refuse)."""
    amount = pods.quantity(limit) if limit is not None else None
    return math.ceil(amount) if amount else None


def _kill(c: Container, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(c.process.pid, sig)


def _group_rss(pgid: int) -> int:
    """Resident memory of every process in a process group, in bytes."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[21]) * page
    return total


def _conditions(ready: bool, evicted: bool = False, unready: list[str] | None = None) -> list[Obj]:
    """The pod's conditions; ``unready`` names containers not yet running, as the
    kubelet says why a pod waiting for them is not Ready."""
    now = _now()
    flag = "True" if ready else "False"
    conditions: list[Obj] = [
        {"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": None}
        for t, s in (
            ("PodScheduled", "True"),
            ("Initialized", "True"),
            ("ContainersReady", flag),
            ("Ready", flag),
        )
    ]
    if unready:
        for condition in conditions[2:]:
            condition["reason"] = "ContainersNotReady"
            condition["message"] = f"containers with unready status: [{' '.join(unready)}]"
    if evicted:
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "TerminationByKubelet",
                "message": "The node was low on resource: memory.",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            }
        )
    return conditions
