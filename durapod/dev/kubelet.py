"""A subprocess "kubelet": runs each Pod's container command as a local process.

It watches Pods through the API server like a node does, binds and starts new ones,
reports Pending → Running → Succeeded/Failed with exit codes and container states,
writes each pod's log where the API server serves ``pods/log`` from, and behaves as a
node on the bad days: a memory watchdog OOM-kills a pod over its limit (SIGKILL,
``OOMKilled``, 137), :meth:`Kubelet.evict` does a node-pressure eviction
(DisruptionTarget, SIGTERM, SIGKILL after the grace period, ``Failed``/``Evicted``), and
a pod deleted gracefully gets SIGTERM, then SIGKILL when its grace period runs out.

The image is not pulled: the "image" is the local Python environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from durapod.dev.apiserver.server import log_file_name

log = logging.getLogger("durapod.dev.kubelet")
Obj = dict[str, Any]
WATCHDOG_SECONDS = 0.1
_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_bytes(quantity: str | int) -> int:
    match = re.fullmatch(r"([0-9.]+)([kMGT]i?)?", str(quantity))
    if not match:
        raise ValueError(f"bad memory quantity {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self, api_url: str, token: str, log_dir: Path, workdir: Path, node_name: str = "durapod-dev"
    ) -> None:
        self.api_url = api_url
        self.token = token
        self.log_dir = log_dir
        self.workdir = workdir
        self.node_name = node_name
        self.containers: dict[str, Container] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- API calls ---------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self._session

    def _pod_url(self, namespace: str, name: str, sub: str = "") -> str:
        return f"{self.api_url}/api/v1/namespaces/{namespace}/pods/{name}{sub}"

    async def _patch_status(self, c: Container, status: Obj) -> None:
        async with self.session.patch(
            self._pod_url(c.namespace, c.name, "/status"),
            data=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            if response.status >= 400 and response.status != 404:
                log.warning("status of pod %s/%s: %s", c.namespace, c.name, await response.text())

    async def _finish_delete(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        async with self.session.delete(
            self._pod_url(namespace, name), data=json.dumps(body)
        ) as response:
            await response.read()

    # -- watching pods -----------------------------------------------------------------

    async def run(self) -> None:
        """List and watch pods until cancelled, re-listing whenever the watch ends."""
        while True:
            try:
                async with self.session.get(f"{self.api_url}/api/v1/pods") as response:
                    listing = await response.json()
                for pod in listing["items"]:
                    await self._on_pod("ADDED", pod)
                rv = listing["metadata"]["resourceVersion"]
                url = (
                    f"{self.api_url}/api/v1/pods?watch=true&resourceVersion={rv}"
                    "&allowWatchBookmarks=true&timeoutSeconds=300"
                )
                async with self.session.get(url, timeout=aiohttp.ClientTimeout()) as response:
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
        meta = pod["metadata"]
        running = self.containers.get(meta["uid"])
        if event == "DELETED":
            if running and running.process.returncode is None:
                running.killed_for = running.killed_for or "Deleted"
                _kill(running, signal.SIGKILL)
            return
        node = pod["spec"].get("nodeName")
        if meta.get("deletionTimestamp"):
            if running and running.process.returncode is None:
                grace = int(meta.get("deletionGracePeriodSeconds") or 0)
                self._spawn(self._terminate(running, grace, "Deleted"))
            elif running is None and node in (None, self.node_name):
                await self._finish_delete(meta["namespace"], meta["name"], meta["uid"])
            return
        if running is None and not node and pod.get("status", {}).get("phase") == "Pending":
            self._spawn(self._start(pod))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the pod lifecycle -------------------------------------------------------------

    async def _start(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        async with self.session.post(
            self._pod_url(meta["namespace"], meta["name"], "/binding"), data=json.dumps(binding)
        ) as response:
            if response.status >= 400:
                return  # gone, or bound elsewhere
        container = spec["containers"][0]
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / log_file_name(meta["namespace"], meta["name"], meta["uid"])
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *(container.get("command") or []),
                *(container.get("args") or []),
                env=self._env(pod, container),
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
            parse_bytes(limit) if limit else None,
        )
        self.containers[meta["uid"]] = c
        log.info("started pod %s/%s as pid %d", c.namespace, c.name, process.pid)
        await self._patch_status(
            c,
            {
                "phase": "Running",
                "startTime": c.started_at,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
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
        c.done.set()

    def _env(self, pod: Obj, container: Obj) -> dict[str, str]:
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": self.node_name,
        }
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": pod["metadata"]["name"],
        }
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            env[var["name"]] = fields.get(ref, "") if ref else str(var.get("value", ""))
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
            await self._finish_delete(c.namespace, c.name, c.uid)

    async def _disruption_conditions(self, c: Container) -> list[Obj]:
        """DisruptionTarget conditions others set (the Eviction API): a node keeps them."""
        async with self.session.get(self._pod_url(c.namespace, c.name)) as response:
            if response.status != 200:
                return []
            current = await response.json()
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
        if self._session is not None:
            await self._session.close()


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


def _conditions(ready: bool, evicted: bool = False) -> list[Obj]:
    now = _now()
    flag = "True" if ready else "False"
    conditions = [
        {"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": None}
        for t, s in (
            ("PodScheduled", "True"),
            ("Initialized", "True"),
            ("ContainersReady", flag),
            ("Ready", flag),
        )
    ]
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
