"""kopf registrations and the operator's loops.

kopf only watches: every TaskRun, run pod and TaskSchedule event adds a key to the work
queue, which reconciles it (retrying failures with backoff). A periodic resync adds every
unfinished run, every queue with waiting runs and every schedule, and now and then the
runs whose TaskRun or record the other lacks, so nothing depends on an event arriving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from datetime import timedelta
from typing import Any

import kopf

from durapod import store
from durapod.operator import metrics
from durapod.operator.background import spawn
from durapod.operator.kube import Kube
from durapod.operator.listening import listen_for_checkpoints
from durapod.operator.pods import LABEL_RUN
from durapod.operator.reconcile import Reconciler
from durapod.operator.schedules import Scheduler
from durapod.operator.settings import Settings
from durapod.operator.workqueue import WorkQueue
from durapod.resources.models import GROUP, VERSION, Phase
from durapod.store import queues, runs
from durapod.timestamps import utcnow

log = logging.getLogger("durapod.operator")
Key = tuple[str, str, str]
#: The sweep (a list of every TaskRun, against the records) comes once per this many
#: resyncs, and at start-up.
SWEEP_EVERY = 10
#: The sweep looks only at records older than this: a TaskRun created during its list is
#: not in it, and its record must not look orphaned.
SWEEP_MARGIN = timedelta(minutes=1)
#: How long a removed record is kept before it is purged.
PURGE_AFTER = timedelta(hours=1)
#: ``host:port`` the metrics are served on (``""`` or ``off``: not served).
METRICS_ADDR = "DURAPOD_OPERATOR_METRICS_ADDR"


class Operator:
    def __init__(self, settings: Settings, pool: store.Pool, kube: Kube) -> None:
        self.settings = settings
        self.pool = pool
        self.kube = kube
        self.ready = asyncio.Event()
        self.queue: WorkQueue[Key] = WorkQueue(self._handle, workers=settings.workers)
        self.reconciler = Reconciler(settings, pool, kube, self.queue.add, self.queue.add_after)
        self.scheduler = Scheduler(kube)
        #: A digest of each TaskRun as last seen, without what never needs a reconcile.
        self._seen: dict[str, bytes] = {}
        self._resyncs = 0

    async def _handle(self, key: Key) -> None:
        await self.ready.wait()  # migrated: the database answers
        kind = key[0]
        errors = metrics.RECONCILE_ERRORS.labels(kind)
        with errors.count_exceptions(), metrics.RECONCILE_DURATION.labels(kind).time():
            await self._reconcile(key)

    async def _reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        if kind == "run":
            await self.reconciler.reconcile(namespace, name)
        elif kind == "queue":
            await self.reconciler.refill(namespace, name)
        elif (due := await self.scheduler.reconcile(namespace, name)) is not None:
            self.queue.add_after(key, (due - utcnow()).total_seconds())

    def taskrun_seen(self, event: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if event == "DELETED":
            self._seen.pop(key, None)
        else:
            digest = _digest(body)
            if self._seen.get(key) == digest:
                return  # only the status (lastCheckpoint, a projection) changed
            self._seen[key] = digest
        self.queue.add(("run", meta["namespace"], meta["name"]))

    async def resync_forever(self) -> None:
        await self.ready.wait()
        while True:
            await self.resync()
            period = self.settings.resync_seconds
            await asyncio.sleep(period * random.uniform(0.75, 1.25))

    async def resync(self) -> None:
        """Reconcile everything that is not finished, whatever events were missed. Each
        walk stands alone: one that fails (the database away, a list timing out) leaves
        the others to do their part."""
        self._resyncs += 1
        metrics.RESYNCS.inc()
        for walk in (self._walk_runs, self._walk_queues, self._walk_schedules, self._sweep):
            try:
                await walk()
            except Exception as exc:
                log.warning(
                    "resync: %s failed (%s); the next resync tries again", walk.__name__, exc
                )

    async def _walk_runs(self) -> None:
        for namespace, name in await runs.unfinished(self.pool):
            self.queue.add(("run", namespace, name))

    async def _walk_queues(self) -> None:
        for namespace, name in await queues.waiting(self.pool):
            self.queue.add(("queue", namespace, name))

    async def _walk_schedules(self) -> None:
        for schedule in await self.kube.list_all("taskschedules", self.settings.watch_namespaces):
            meta = schedule["metadata"]
            self.queue.add(("schedule", meta["namespace"], meta["name"]))

    async def _sweep(self) -> None:
        """Every ``SWEEP_EVERY`` resyncs: TaskRuns no record knows, and records whose
        TaskRun is gone (deleted while no operator watched), are reconciled."""
        if self._resyncs % SWEEP_EVERY != 1:
            return
        started = utcnow()
        listed = await self.kube.list_all("taskruns", self.settings.watch_namespaces)
        for run in listed:
            phase = (run.get("status") or {}).get("phase")
            if not phase or not Phase(phase).finished:
                self.queue.add(("run", run["metadata"]["namespace"], run["metadata"]["name"]))
        live = [run["metadata"]["uid"] for run in listed]
        for namespace, name in await runs.sweep(self.pool, live, started - SWEEP_MARGIN):
            self.queue.add(("run", namespace, name))  # its reconcile removes it, if gone
        await runs.purge_removed(self.pool, PURGE_AFTER)


def _digest(body: dict[str, Any]) -> bytes:
    """What a reconcile reads of a TaskRun: its metadata and spec. Its status is written
    from the record (a change there, by another replica or anyone, is no news; the
    resync puts a wrong one right)."""
    meta = {
        k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "managedFields")
    }
    text = json.dumps([meta, body.get("spec")], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


async def _migrate_or_exit(dsn: str, ready: asyncio.Event) -> None:
    """Wait for the database and migrate it; a migration that cannot apply ends the process
    (its restarts show in the Deployment) rather than leave an operator that does nothing."""
    try:
        await store.migrate_when_up(dsn, ready)
    except Exception:
        log.exception("the database could not be migrated; exiting")
        logging.shutdown()
        os._exit(3)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations; status belongs to durapod.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = Settings.from_env()
    # The operator starts whether or not PostgreSQL is up: it waits, then carries on.
    memo.pool = await store.open_pool(config.database_url)
    operator = memo.operator = Operator(config, memo.pool, Kube())
    operator.queue.start()
    metrics.WORKQUEUE_DEPTH.set_function(lambda: operator.queue.depth)
    metrics.serve(os.environ.get(METRICS_ADDR, metrics.DEFAULT_ADDRESS))
    memo.tasks = [
        spawn(metrics.refresh_forever(memo.pool, operator.ready), "metrics"),
        spawn(_migrate_or_exit(config.database_url, operator.ready), "migrations"),
        spawn(listen_for_checkpoints(config.database_url, operator.reconciler), "listener"),
        spawn(operator.resync_forever(), "resync"),
    ]


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.tasks:
        task.cancel()
    await memo.operator.queue.stop()
    await memo.pool.close()


@kopf.on.event(GROUP, VERSION, "taskruns")
async def taskrun_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.operator.taskrun_seen(type or "ADDED", dict(body))


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN: kopf.PRESENT})
async def pod_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.operator.reconciler.pod_seen(type or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "taskschedules")
async def schedule_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    memo.operator.queue.add(("schedule", meta["namespace"], meta["name"]))
