"""A subprocess "kubelet": the one node of the stand-in cluster, and its scheduler.

It registers its Node, watches Pods through the API server like a node does, schedules
new ones against the node's allocatable cpu, memory and pod count (see
:mod:`durapod.dev.scheduler`), and runs each pod bound to it as a local process:
Pending → Running → Succeeded/Failed with exit codes and container states, the log
where the API server serves ``pods/log`` from. A pod that names the node itself passes
the kubelet's own admission check or is rejected (``OutOfmemory``). It behaves as a node
on the bad days: a memory watchdog (:mod:`durapod.dev.oomwatch`) OOM-kills a pod over
its limit (SIGKILL, ``OOMKilled``, 137), :meth:`Kubelet.evict` does a node-pressure eviction
(DisruptionTarget, SIGTERM, SIGKILL after the grace period, ``Failed``/``Evicted``), and
a pod deleted gracefully gets SIGTERM, then SIGKILL when its grace period runs out.

Images are not pulled: a known image stands for a local environment (see
:mod:`durapod.dev.images`); any other image waits in ``ErrImagePull`` and
``ImagePullBackOff``, with the kubelet's Events, and never runs
(:mod:`durapod.dev.imagepull`).

A container's process runs in a mount namespace of its own with the pod's volumes at
their ``mountPath`` (:mod:`durapod.dev.volumes`, :mod:`durapod.dev.podinit`: the kubelet
needs root for that and refuses to start without it) and the environment its spec gives
it (:mod:`durapod.dev.podenv`: Secrets, ConfigMaps, the downward API, ``$(VAR)``, and the
API server's ``KUBERNETES_SERVICE_*`` variables); a missing Secret or ConfigMap holds it
in ``CreateContainerConfigError``, a command that cannot start ends it as ``StartError``
(:mod:`durapod.dev.podlaunch`). The statuses it writes are made by
:mod:`durapod.dev.podstatus`; this module is the orchestration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from durapod.dev import (
    imagepull,
    images,
    node,
    oomwatch,
    podenv,
    podlaunch,
    podnet,
    podstatus,
    probes,
    restarts,
    scheduling,
)
from durapod.dev.apiserver.server import log_file_name
from durapod.dev.containers import Container, kill, memory_bytes
from durapod.dev.nodeapi import NodeApi
from durapod.dev.nodeapi import now as _now
from durapod.dev.podnet import PodNetworks
from durapod.dev.scheduler import Scheduler
from durapod.dev.volumes import MountError, Volumes, check_mount_namespaces

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
#: How soon a container waiting in CreateContainerConfigError is tried again (the pod
#: worker's back-off after a failed sync).
CONFIG_RETRY_SECONDS = 10.0
#: How often the kubelet posts its Node's status when nothing changes
#: (nodeStatusReportFrequency).
NODE_STATUS_SECONDS = 300.0


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
    #: The wait before the second restart of a container that keeps exiting
    #: (CrashLoopBackOff); each further exit doubles it (10s upstream; the first restart
    #: is at once).
    crash_back_off: timedelta = timedelta(seconds=10)
    #: The longest crash back-off (300s upstream); a container that ran twice as long
    #: as this before it exited starts again from the first.
    crash_back_off_max: timedelta = timedelta(seconds=300)
    #: Directories put first on every pod's ``PYTHONPATH``, before the working directory:
    #: where task code outside the checkout lives (``durapod dev --tasks DIR``).
    python_path: tuple[Path, ...] = ()
    #: ``host``: pods share this machine's network (their IP is 127.0.0.1, two pods
    #: cannot listen on one port). ``isolated`` (root only): each pod has a network
    #: namespace of its own, reaches Services by name and ClusterIP, and this machine's
    #: loopback services at ``127.0.0.1`` (see :mod:`durapod.dev.podnet`).
    pod_network: str = "host"
    #: With an isolated pod network: the ports of this machine's loopback a pod reaches at
    #: its own ``127.0.0.1`` (the API server's are always among them).
    host_ports: tuple[int, ...] = ()


class Kubelet:
    def __init__(
        self,
        api_url: str,
        token: str,
        log_dir: Path,
        workdir: Path,
        settings: NodeSettings | None = None,
        cluster_url: str = "",
    ) -> None:
        """A node whose kubelet talks to the API server at ``api_url`` with ``token``;
        ``cluster_url`` is the server's HTTPS address, given to pods as
        ``KUBERNETES_SERVICE_HOST``/``_PORT`` (none when empty). Raises
        :class:`~durapod.dev.volumes.NoMountNamespaces` when this machine cannot give a
        container its own mounts."""
        check_mount_namespaces()
        self.settings = settings or NodeSettings()
        self.cluster_url = cluster_url
        self.api_url = api_url
        self.token = token
        self.log_dir = log_dir
        self.workdir = workdir
        self.node_name = self.settings.name
        self.capacity = scheduling.Amounts.of({**node.machine_capacity(), **self.settings.capacity})
        self.allocatable = self.capacity - scheduling.Amounts.of(self.settings.reserved)
        self.images = images.Images({**images.default_images(), **self.settings.images})
        self.api = NodeApi(api_url, token, self.node_name)
        self.volumes = Volumes(
            self.api, log_dir.parent / "kubelet-pods", self.allocatable.resource_list()
        )
        #: Why a container's process could not start, by its pid (it exited 128).
        self.start_errors: dict[int, str] = {}
        self.scheduler = Scheduler(self.api, self.allocatable)
        self.containers: dict[str, Container] = {}
        self._admitted: set[str] = set()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._back_off = images.BackOff(
            self.settings.image_back_off.total_seconds(),
            self.settings.image_back_off_max.total_seconds(),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Pods seen being deleted: their containers are not restarted.
        self._deleting: set[str] = set()
        #: The crash back-off of each container (CrashLoopBackOff).
        self._crashes = restarts.CrashBackOff(
            self.settings.crash_back_off.total_seconds(),
            self.settings.crash_back_off_max.total_seconds(),
        )
        #: When each pod's activeDeadlineSeconds passes (loop time), across restarts.
        self._deadlines: dict[str, float] = {}
        #: Each pod's conditions as last written.
        self._transitions = podstatus.Transitions()
        #: Every container process started and not yet seen to end.
        self._processes: set[asyncio.subprocess.Process] = set()
        #: Each pod's own network namespace (with ``pod_network="isolated"``).
        self.network: PodNetworks | None = None
        if self.settings.pod_network == "isolated":
            if reason := podnet.unavailable():
                raise podnet.NetworkError(reason)
            served = [urlsplit(u) for u in (api_url, cluster_url) if u]
            self.network = PodNetworks(
                api_url,
                token,
                [("127.0.0.1", p) for p in self.settings.host_ports]
                + [(u.hostname, u.port) for u in served if u.hostname and u.port],
            )
            self.network.start()  # here, so that a machine that cannot says so at once
        elif self.settings.pod_network != "host":
            raise ValueError(
                f"pod_network must be host or isolated, not {self.settings.pod_network!r}"
            )

    async def _patch_status(self, c: Container, status: Obj) -> None:
        """Write the pod's status; a condition whose status stays keeps the time it last
        changed (readiness over time is what minReadySeconds counts)."""
        self._transitions.keep(c.uid, status)
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
        if self.network is not None:
            self._spawn(self.network.run())
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
                kill(running, signal.SIGKILL)
            if running and running.wake is not None:
                running.wake.set()
            return
        node_name = pod["spec"].get("nodeName")
        if meta.get("deletionTimestamp"):
            self._deleting.add(uid)
            if running and running.process.returncode is None:
                grace = int(meta.get("deletionGracePeriodSeconds") or 0)
                self._spawn(self._terminate(running, grace, "Deleted"))
            elif running and running.wake is not None:  # waiting to be restarted
                running.wake.set()
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
        self._deleting.discard(uid)
        self._deadlines.pop(uid, None)
        self._transitions.forget(uid)
        if self.network is not None:
            self._spawn(self.network.remove(uid))
        self._crashes.forget(f"{uid}_")
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
            pulling = imagepull.pull_back_off(
                self.api, self._back_off, pod, container, self._report_waiting
            )
            self._pulls[uid] = self._spawn(pulling)
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

    async def _report_waiting(
        self, pod: Obj, container: Obj, started: str, reason: str, message: str
    ) -> None:
        meta = pod["metadata"]
        status = podstatus.waiting(container, started, reason, message)
        await self.api.patch_pod_status(meta["namespace"], meta["name"], status)

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
        if (
            self.network is not None
            and not spec.get("hostNetwork")
            and not await self._network(pod)
        ):
            return
        before: Container | None = None
        while True:
            process, env = await self._launch(pod, container, environment, dirs, log_path)
            c = Container(
                meta["namespace"],
                meta["name"],
                meta["uid"],
                process,
                _now(),
                memory_bytes(limit),
            )
            if before is not None:
                c.restart_count = before.restart_count + 1
                c.last_state = before.last_state
            self.containers[meta["uid"]] = c
            if meta["uid"] not in self._admitted:  # deleted while it was starting
                c.killed_for = "Deleted"
                kill(c, signal.SIGKILL)
            log.info("started pod %s/%s as pid %d", c.namespace, c.name, process.pid)
            if not await self._run(pod, container, c, env):
                break
            before = c
        self.volumes.unmount(meta["uid"])
        if self.network is not None:
            await self.network.remove(meta["uid"])

    async def _launch(
        self, pod: Obj, container: Obj, environment: Path, dirs: dict[str, Path], log_path: Path
    ) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
        """Start the container's process; the process and its environment.

        See :mod:`durapod.dev.podlaunch`. A start that fails (a command not found, say)
        exits 128 with the reason in :attr:`start_errors` and in the log, as a runtime's
        StartError. While the container's configuration cannot be made (a missing Secret)
        it waits; if the pod goes away meanwhile, the pod's worker is cancelled.
        """
        env = await self._config(pod, container, environment)
        if env is None:
            raise asyncio.CancelledError  # the pod is gone: nothing to start
        uid = pod["metadata"]["uid"]
        security = container.get("securityContext") or {}
        layout = {
            "scratch": str(self.volumes.scratch(uid)),
            "cwd": container.get("workingDir") or str(self.workdir),
            "mounts": self._mounts(pod, container, dirs, env),
            "readOnlyRootFilesystem": bool(security.get("readOnlyRootFilesystem")),
            # The "image" is this machine's environment and code: a volume over one of
            # their parents (an emptyDir at /tmp, say, when they live under /tmp) must
            # not hide them, as a volume never hides the image's own files elsewhere.
            "image": [
                str(environment.parent),
                str(self.workdir),
                *(str(p) for p in self.settings.python_path),
            ],
        }
        process, failure = await podlaunch.launch(
            self._netns(uid),
            layout,
            podenv.command(self.images.with_defaults(container), env),
            env,
            self.workdir,
            log_path,
            self._processes.add,
        )
        if failure is not None:
            self.start_errors[process.pid] = failure
            ref = f"spec.containers{{{container['name']}}}"
            await self.api.record(pod, "Warning", "Failed", f"Error: {failure}", field_path=ref)
        return process, env

    def _mounts(
        self, pod: Obj, container: Obj, dirs: dict[str, Path], env: Mapping[str, str]
    ) -> list[Obj]:
        """The container's volume mounts, and the pod's ``/etc/hosts`` unless it mounts
        one of its own."""
        mounts = self.volumes.mounts(pod, container, dirs, env)
        if not any(m["target"].rstrip("/") == "/etc/hosts" for m in mounts):
            api_host = urlsplit(self.cluster_url).hostname or ""
            hosts = self.volumes.hosts_file(pod, api_host)
            mounts.append({"source": str(hosts), "target": "/etc/hosts", "readOnly": False})
            if self.network is not None:  # and the Services' names
                self.network.keep_hosts(pod["metadata"]["uid"], hosts)
        return mounts

    async def _config(self, pod: Obj, container: Obj, environment: Path) -> dict[str, str] | None:
        """The container's environment. While a ConfigMap or Secret it needs is missing,
        the container waits in ``CreateContainerConfigError`` and is tried again as the
        pod worker does after a failed sync; None once the pod is gone."""
        started = _now()
        ref = f"spec.containers{{{container['name']}}}"
        while pod["metadata"]["uid"] in self._admitted:
            try:
                return await self._env(pod, container, environment)
            except (podenv.ConfigError, MountError) as exc:
                await self.api.record(pod, "Warning", "Failed", f"Error: {exc}", field_path=ref)
                await self._report_waiting(
                    pod, container, started, "CreateContainerConfigError", str(exc)
                )
            await asyncio.sleep(CONFIG_RETRY_SECONDS)
        return None

    async def _env(self, pod: Obj, container: Obj, environment: Path) -> dict[str, str]:
        """The image's environment, then what the container's spec gives it (see
        :mod:`durapod.dev.podenv`), with the API server's service variables."""
        given = await podenv.container_env(
            podenv.placed(pod, self.node_name, self._addresses(pod)),
            container,
            self.volumes.read,
            self.allocatable.resource_list(),
            podenv.service_variables(self.cluster_url),
        )
        python_path = (*self.settings.python_path, self.workdir)
        image = podenv.image_variables(environment, python_path, pod["metadata"]["name"])
        return {**image, **given}

    def _terminated(self, c: Container, code: int) -> Obj:
        """The container's ``state.terminated`` after its process exited with ``code``."""
        return podstatus.terminated(c, code, self.start_errors.pop(c.process.pid, None))

    async def _report_exit(self, pod: Obj, container: Obj, c: Container, code: int) -> None:
        terminated = self._terminated(c, code)
        exit_code, reason = terminated["exitCode"], terminated["reason"]
        status: Obj = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": podstatus.conditions(ready=False, evicted=c.killed_for == "Evicted")
            + await self._disruption_conditions(c),
            "containerStatuses": [
                podstatus.container_status(container, c, {"terminated": terminated}, False)
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

    # -- a running container: probes, exit, restarts -----------------------------------

    async def _run(self, pod: Obj, container: Obj, c: Container, env: dict[str, str]) -> bool:
        """The container from its start to its exit: its guards and probes, then its exit
        reported, or (restartPolicy Always, or OnFailure after a failure) its crash
        back-off waited out. True when it is to start again."""
        spec = pod["spec"]
        ref = f"spec.containers{{{container['name']}}}"
        grace = float(spec.get("terminationGracePeriodSeconds", 30))

        async def changed(kind: str, passed: bool) -> None:
            if passed or kind == "readinessProbe":
                await self._report_running(pod, container, c)
                return
            which = "liveness" if kind == "livenessProbe" else "startup"
            message = f"Container {container['name']} failed {which} probe, will be restarted"
            await self.api.record(pod, "Normal", "Killing", message, field_path=ref)
            given = container[kind].get("terminationGracePeriodSeconds")
            wait = float(given) if given is not None else grace
            self._spawn(self._terminate(c, wait, "Unhealthy"))

        async def failed(kind: str, message: str) -> None:
            await self.api.record(pod, "Warning", "Unhealthy", message, field_path=ref)

        uid = pod["metadata"]["uid"]
        target = probes.Target(
            self._pod_ip(pod),
            container,
            env,
            self.workdir,
            self._netns(uid),
            None if self.network is None else self.network.connect,
        )
        c.target = target
        c.prober = probes.Prober(container, target, changed, failed)
        c.prober.start()
        await self._report_running(pod, container, c)
        guards = []
        if c.memory_limit:
            guards.append(asyncio.create_task(oomwatch.watch_memory(c)))
        if (deadline := spec.get("activeDeadlineSeconds")) is not None:
            loop = asyncio.get_running_loop()
            due = self._deadlines.setdefault(c.uid, loop.time() + float(deadline))
            guards.append(asyncio.create_task(self._deadline(c, due - loop.time(), grace)))
        c.code = code = await c.process.wait()
        self._processes.discard(c.process)
        c.prober.stop()
        for guard in guards:
            guard.cancel()
        again = restarts.should_restart(spec.get("restartPolicy", "Always"), code, c.killed_for)
        if not again or c.uid in self._deleting or c.uid not in self._admitted:
            await self._report_exit(pod, container, c, code)
            c.done.set()
            return False
        c.last_state = {"terminated": self._terminated(c, code)}
        c.done.set()
        return await self._crash_loop(pod, container, c)

    def _pod_ip(self, pod: Obj) -> str:
        """The pod's IP: its own with an isolated network, else this machine's loopback."""
        net = self.network.pods.get(pod["metadata"]["uid"]) if self.network else None
        return net.ip if net is not None else str(podstatus.ADDRESSES["podIP"])

    def _addresses(self, pod: Obj) -> Obj:
        return podstatus.addresses(self._pod_ip(pod))

    def _netns(self, uid: str) -> list[str]:
        """What a pod's commands run under to be in its network namespace (if it has one)."""
        return self.network.prefix(uid) if self.network is not None else []

    async def _network(self, pod: Obj) -> bool:
        """The pod's network namespace; False (and a FailedCreatePodSandBox Event) when it
        cannot be made: the pod stays Pending."""
        assert self.network is not None
        try:
            await self.network.add(pod)
        except (OSError, podnet.NetworkError) as exc:
            message = f"Failed to create pod sandbox: {exc}"
            log.warning(
                "pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], message
            )
            await self.api.record(pod, "Warning", "FailedCreatePodSandBox", message)
            return False
        return True

    async def _report_running(self, pod: Obj, container: Obj, c: Container) -> None:
        async with c.writing:  # probes report too: what is read here is written in turn
            ready = c.prober is None or c.prober.ready
            started = c.prober is None or c.prober.started.is_set()
            state = {"running": {"startedAt": c.started_at}}
            unready = None if ready else [container["name"]]
            status: Obj = {
                "phase": "Running",
                **self._addresses(pod),
                "conditions": podstatus.conditions(ready=ready, unready=unready),
                "containerStatuses": [
                    podstatus.container_status(container, c, state, ready, started)
                ],
            }
            if not c.restart_count:
                status["startTime"] = c.started_at
            await self._patch_status(c, status)

    async def _crash_loop(self, pod: Obj, container: Obj, c: Container) -> bool:
        """The crash back-off before a restart (see :mod:`durapod.dev.restarts`), the
        container ``CrashLoopBackOff`` meanwhile. False when the pod is being deleted
        (its exit is then reported as the last one)."""
        meta = pod["metadata"]
        name = container["name"]
        key = f"{c.uid}_{name}"
        loop = asyncio.get_running_loop()
        finished = loop.time()
        if wait := self._crashes.wait(key, finished):
            shown = f"{meta['name']}_{meta['namespace']}({c.uid})"
            ref = f"spec.containers{{{name}}}"
            message = f"Back-off restarting failed container {name} in pod {shown}"
            await self.api.record(pod, "Warning", "BackOff", message, field_path=ref)
            waiting = {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {restarts.go_duration(wait)} restarting failed "
                f"container={name} pod={shown}",
            }
            state = {"waiting": waiting}
            await self._patch_status(
                c,
                {
                    "phase": "Running",
                    "conditions": podstatus.conditions(ready=False, unready=[name]),
                    "containerStatuses": [
                        podstatus.container_status(container, c, state, False, False)
                    ],
                },
            )
            c.wake = asyncio.Event()
            with contextlib.suppress(TimeoutError):  # not wait_for: see Scheduler.run
                async with asyncio.timeout(max(wait - (loop.time() - finished), 0.0)):
                    await c.wake.wait()
            c.wake = None
        if c.uid in self._deleting or c.uid not in self._admitted:
            c.killed_for = c.killed_for or "Deleted"
            await self._report_exit(pod, container, c, c.code or 0)
            return False
        self._crashes.restarted(key, finished, loop.time())
        return True

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
        """The container's preStop hook (within the grace period), SIGTERM, then SIGKILL
        once ``grace`` seconds have passed."""
        c.killed_for = c.killed_for or why
        hook = ((c.target.container if c.target else {}).get("lifecycle") or {}).get("preStop")
        if hook and c.target is not None and not c.stopping and c.process.returncode is None:
            c.stopping = True
            loop = asyncio.get_running_loop()
            began = loop.time()
            passed, message = await probes.run_hook(hook, c.target, grace)
            if not passed:
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": c.name, "namespace": c.namespace, "uid": c.uid},
                }
                ref = f"spec.containers{{{c.target.container['name']}}}"
                text = f"PreStopHook failed: {message}"
                await self.api.record(pod, "Warning", "FailedPreStopHook", text, field_path=ref)
            # What is left of the grace period, at least 2s (minimumGracePeriodInSeconds).
            grace = max(grace - (loop.time() - began), 2.0)
        c.stopping = True
        kill(c, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):  # not wait_for: see Scheduler.run
                await c.process.wait()
        except TimeoutError:
            kill(c, signal.SIGKILL)
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
                    *podstatus.conditions(ready=True),
                    podstatus.disruption_target(_now()),
                ]
            },
        )
        await self._terminate(c, grace, "Evicted")

    def _find(self, namespace: str, name: str) -> Container:
        for c in self.containers.values():
            if (c.namespace, c.name) == (namespace, name) and c.process.returncode is None:
                return c
        raise LookupError(f"no running pod {namespace}/{name} on this node")

    async def stop(self) -> None:
        """Kill every pod process (the node goes away) and close the API session."""
        # Snapshots: workers still running add containers while this waits.
        for c in list(self.containers.values()):
            if c.process.returncode is None:
                kill(c, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    await c.process.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Every container is over: a _terminate waiting for one must not wait on (its
        # cancellation can be lost in asyncio.wait_for when the process ends meanwhile).
        for c in list(self.containers.values()):
            c.done.set()
            if c.prober is not None:  # its worker may be cancelled before it stops it
                tasks.extend(c.prober.stop())
        await asyncio.gather(*tasks, return_exceptions=True)
        # Processes started while the node was going (their workers are cancelled now).
        for process in list(self._processes):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        self.volumes.close()
        if self.network is not None:
            await self.network.close()
        await self.api.close()
