"""An operator without kopf, for tests that stop it between two writes and restart it.

``Stack`` is what the operator needs around it: the stand-in cluster (with a kubelet that
runs pods as subprocesses) with durapod's CRDs, a migrated database and ``python -m
durapod.api`` (the runner pods report their checkpoints and outcome to it). ``Replica``
is one operator "process" on the test's own event loop: its own connection pool, its own
lightkube client and a ``Reconciler``; the test drives reconciles itself (``drive``) in
place of kopf's events and the work queue. ``CrashingKube`` "kills the process" once, at a
chosen call: it raises ``Crash``, which nothing in the operator catches, and the test then
drops that replica and starts a fresh one (new pool, new client), as a restart would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from durapod import store
from durapod.dev.apiserver.cluster import Cluster, Options
from durapod.dev.postgres import free_port
from durapod.kubeclient import TaskDefinitionResource, TaskRunResource
from durapod.operator import projection
from durapod.operator.kube import Kube
from durapod.operator.pods import LABEL_RUN
from durapod.operator.reconcile import Reconciler
from durapod.operator.settings import Settings
from durapod.resources import crds
from durapod.store import pods as pod_records
from durapod.store import runs
from tests.helpers import TOKEN, LocalCluster, wait_for

API_TOKEN = "harness-api-token"
NS = "default"
Obj = dict[str, Any]
Key = tuple[str, str, str]
#: Generous: pods are Python processes and the machine is busy.
DEADLINE = 90.0
#: Failures the operator's work queue retries, and so do the tests' loops.
TRANSIENT = (*store.UNAVAILABLE, httpx.TransportError)


class Crash(BaseException):
    """The operator process dies here: nothing in the operator catches a BaseException."""


def install_crds(cluster: LocalCluster) -> None:
    def install(c: Cluster) -> None:
        crd_type = c.registry.find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crd_type is not None
        for manifest in crds.all_crds():
            c.create(crd_type, "", manifest, Options())

    cluster.read(install)


class ApiProcess:
    """``python -m durapod.api`` as a Deployment runs it."""

    def __init__(self, dsn: str, kubeconfig: Path, logs: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = logs / "api.log"
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "durapod.api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    self.url.rsplit(":", 1)[1],
                ],
                env={
                    **os.environ,
                    "DATABASE_URL": dsn,
                    "DURAPOD_API_TOKENS": API_TOKEN,
                    "KUBECONFIG": str(kubeconfig),
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the API exited with {self.process.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                return httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, "the API to be ready")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)


@dataclass
class Stack:
    cluster: LocalCluster
    dsn: str
    api: ApiProcess

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def settings(self, **overrides: Any) -> Settings:
        return Settings(database_url=self.dsn, api_url=self.api.url, **overrides)

    def pod_logs(self, run: str, namespace: str = NS) -> list[Path]:
        """One log file per pod the kubelet ever started for the run (by pod uid)."""
        return sorted(self.cluster.log_dir.glob(f"{namespace}_{run}-*_*.log"))


@contextmanager
def running_stack(cluster: LocalCluster, dsn: str) -> Iterator[Stack]:
    install_crds(cluster)
    store.migrate(dsn)
    api = ApiProcess(dsn, cluster.kubeconfig, cluster.home)
    try:
        api.wait_ready()
        yield Stack(cluster, dsn, api)
    finally:
        api.close()


def new_client(kubeconfig: Path) -> AsyncClient:
    return AsyncClient(config=KubeConfig.from_file(kubeconfig))


class CrashingKube(Kube):
    """``Kube`` that raises ``Crash`` once, at ``point`` when ``match(argument)`` holds.

    Points: ``before create_pod`` / ``after create_pod`` (the manifest),
    ``before patch_run_status`` (the status patch), ``before event`` (the reason).
    """

    def __init__(
        self, client: AsyncClient, point: str, match: Callable[[Any], bool] = lambda _: True
    ) -> None:
        super().__init__(client)
        self.point, self.match = point, match
        self.crashed = False

    def _maybe_crash(self, point: str, argument: Any) -> None:
        if not self.crashed and point == self.point and self.match(argument):
            self.crashed = True
            raise Crash(point)

    async def create_pod(self, manifest: Obj) -> bool:
        self._maybe_crash("before create_pod", manifest)
        created = await super().create_pod(manifest)
        self._maybe_crash("after create_pod", manifest)
        return created

    async def patch_run_status(self, run: Obj, status: Obj) -> Obj:
        self._maybe_crash("before patch_run_status", status)
        return await super().patch_run_status(run, status)

    async def event(self, run: Obj, reason: str, message: str, warning: bool = False) -> None:
        self._maybe_crash("before event", reason)
        await super().event(run, reason, message, warning)


@dataclass
class Replica:
    """One operator process: its pool, its client, its reconciler; keys it asked for."""

    settings: Settings
    pool: store.Pool
    kube: Kube
    reconciler: Reconciler = field(init=False)
    #: Queues the reconciler asked to refill (``("queue", ns, name)`` keys).
    queues: set[Key] = field(default_factory=set)
    #: Every key the reconciler added, in order (``add`` and ``add_after``).
    added: list[Key] = field(default_factory=list)
    #: Transient failures ``drive`` retried (a busy machine can time out a connection).
    transient: list[Exception] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.settings, self.pool, self.kube, self._add, self._after)

    @classmethod
    async def start(cls, stack: Stack, make_kube: Callable[[AsyncClient], Kube] = Kube) -> Replica:
        pool = await store.open_pool(stack.dsn)
        return cls(stack.settings(), pool, make_kube(new_client(stack.kubeconfig)))

    def _add(self, key: Key) -> None:
        self.added.append(key)
        if key[0] == "queue":
            self.queues.add(key)

    def _after(self, key: Key, seconds: float) -> None:
        self._add(key)

    async def stop(self) -> None:
        """Close what the process held (its death closes its sockets just the same)."""
        await self.pool.close()
        await self.kube.client.close()

    async def step(self, namespace: str, names: list[str]) -> None:
        """Reconcile each run once, then hand out the slots of the queues asked for."""
        for name in names:
            await self.reconciler.reconcile(namespace, name)
        while self.queues:
            _, ns, queue = self.queues.pop()
            await self.reconciler.refill(ns, queue)

    async def reconcile_once(self, name: str, namespace: str = NS) -> None:
        """One successful pass over the run (retried only on a transient failure)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                return await self.step(namespace, [name])
            except TRANSIENT as exc:
                self.transient.append(exc)
                if time.monotonic() > deadline:
                    raise
            await _pause()

    async def drive(
        self,
        names: list[str],
        done: Callable[[], Awaitable[bool]],
        what: str,
        timeout: float = DEADLINE,
        namespace: str = NS,
    ) -> None:
        """Reconcile the runs over and over until ``done()`` holds (polled, not slept on)."""
        deadline = time.monotonic() + timeout
        while not await _holds(done):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            try:
                await self.step(namespace, names)
            except TRANSIENT as exc:  # what the work queue would retry: so does this loop
                self.transient.append(exc)
            await _pause()


async def _holds(condition: Callable[[], Any]) -> bool:
    """The condition (sync or async), read through the test's own connections: a read
    that fails for a transient reason (a busy machine, a dropped connection) is a "not
    yet"."""
    try:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
    except TRANSIENT:
        return False
    return bool(value)


async def until(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE, every: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def _pause() -> None:
    await asyncio.sleep(0.05)  # the polling interval, not a synchronisation


class Observer:
    """What a test reads: TaskRuns, pods and Events through the API server, records from
    the database; and outside writes to a TaskRun's status."""

    def __init__(self, stack: Stack, pool: store.Pool) -> None:
        self.stack = stack
        self.pool = pool
        self.kube = Kube(new_client(stack.kubeconfig))

    @classmethod
    async def open(cls, stack: Stack) -> Observer:
        return cls(stack, await store.open_pool(stack.dsn, max_size=2, timeout=30.0))

    async def close(self) -> None:
        await self.pool.close()
        await self.kube.client.close()

    async def define(self, name: str, entrypoint: str, **spec: Any) -> None:
        body = {
            "apiVersion": "durapod.io/v1",
            "kind": "TaskDefinition",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"image": "durapod:dev", "entrypoint": entrypoint, **spec},
        }
        await self.kube.client.create(TaskDefinitionResource.from_dict(body))

    async def trigger(self, name: str, task: str, payload: Obj, **spec: Any) -> Obj:
        run, created = await self.kube.create_taskrun(
            NS, name, {"task": task, "payload": payload, **spec}
        )
        assert created
        return run

    async def taskrun(self, name: str) -> Obj:
        run = await self.kube.get_taskrun(NS, name)
        assert run is not None, f"TaskRun {name} is gone"
        return run

    async def status(self, name: str) -> Obj:
        return cast(Obj, (await self.taskrun(name)).get("status") or {})

    async def record(self, name: str) -> runs.Run | None:
        return await runs.by_name(self.pool, NS, name)

    async def pod_records(self, name: str) -> list[pod_records.PodRecord]:
        record = await self.record(name)
        assert record is not None
        return await pod_records.for_run(self.pool, record.id)

    async def checkpoints(self, name: str) -> list[str]:
        """The steps the run's pods have checkpointed, in order."""
        record = await self.record(name)
        if record is None:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT step FROM checkpoints WHERE run_id = %s ORDER BY seq", (record.id,)
            )
            return [row["step"] for row in await cur.fetchall()]

    async def pods(self, name: str) -> list[Obj]:
        return [
            pod.to_dict()
            async for pod in self.kube.client.list(Pod, namespace=NS, labels={LABEL_RUN: name})
        ]

    async def events(self, name: str) -> list[str]:
        """Reasons of the run's Events, oldest first."""
        found = [e.to_dict() async for e in self.kube.client.list(Event, namespace=NS)]
        mine = [e for e in found if e["involvedObject"]["name"] == name]
        mine.sort(key=lambda e: e.get("eventTime") or "")
        return [e["reason"] for e in mine]

    async def evict(self, pod: str) -> None:
        """Evict the pod through the Eviction API, as a node drain does."""
        url = f"{self.stack.cluster.url}/api/v1/namespaces/{NS}/pods/{pod}/eviction"
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            response = await client.post(url, json=body)
        assert response.status_code in (200, 201), response.text

    async def write_status(self, name: str, status: Obj) -> None:
        """A merge patch of the /status subresource from outside the operator."""
        await self.kube.client.patch(
            TaskRunResource.Status,
            name,
            {"status": status},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )

    async def agrees(self, name: str) -> bool:
        """The TaskRun status is the projection of the run record (nothing to patch)."""
        record = await self.record(name)
        if record is None:
            return False
        return projection.patch(await self.status(name), record) == {}

    async def finished(self, name: str, phase: str = "Succeeded") -> bool:
        record = await self.record(name)
        if record is None or record.phase != phase:
            return False
        return (await self.status(name)).get("phase") == phase and await self.agrees(name)

    async def assert_succeeded_once(self, name: str, output: Any) -> None:
        """Succeeded in one attempt with ``output``, record and status agreeing, one pod
        (whose record shows its outcome), no queue slot held."""
        record = await self.record(name)
        assert record is not None
        got = (record.phase, record.output, record.attempt, record.pods)
        assert got == ("Succeeded", output, 1, 1), record
        assert not record.holds_slot and record.queued_at is None, record
        status = await self.status(name)
        got = (status["phase"], status["output"], status["attempt"], status["pods"])
        assert got == ("Succeeded", output, 1, 1), status
        assert status["definition"] == record.definition
        assert await self.agrees(name)
        await self.assert_one_pod_per_attempt(name)
        assert [p.outcome for p in await self.pod_records(name)] == ["Succeeded"]

    async def assert_one_pod_per_attempt(self, name: str) -> None:
        """Each pod index the record gave out has one pod record, one pod in the cluster and
        was started once by the kubelet (one pod uid), and the run had one attempt per pod
        (no disruption happens in these tests)."""
        record = await self.record(name)
        assert record is not None
        rows = await self.pod_records(name)
        assert [(p.idx, p.attempt) for p in rows] == [(i, i) for i in range(1, record.pods + 1)], (
            rows
        )
        assert record.attempt == record.pods, record
        assert all(p.in_cluster for p in rows), rows
        names = sorted(p["metadata"]["name"] for p in await self.pods(name))
        expected = [f"{name}-{i}" for i in range(1, record.pods + 1)]
        assert names == expected, names
        started = [p.name.split("_")[1] for p in self.stack.pod_logs(name)]
        assert sorted(started) == expected, started


def run_id(run: Obj) -> UUID:
    return UUID(run["metadata"]["uid"])
