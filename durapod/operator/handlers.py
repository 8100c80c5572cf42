"""kopf registrations: every TaskRun and run-pod event goes to the reconciler."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from durapod import store
from durapod.operator.background import spawn
from durapod.operator.kube import Kube
from durapod.operator.listening import listen_for_checkpoints
from durapod.operator.pods import LABEL_RUN
from durapod.operator.reconcile import Reconciler
from durapod.operator.schedules import Scheduler
from durapod.operator.settings import Settings
from durapod.resources.models import GROUP, VERSION


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
    memo.pool = await store.open_pool(config.database_url)
    kube = Kube()
    memo.reconciler = Reconciler(config, memo.pool, kube)
    memo.scheduler = Scheduler(kube)
    memo.listener = spawn(
        listen_for_checkpoints(config.database_url, memo.reconciler), "checkpoint listener"
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.listener.cancel()
    await memo.pool.close()


@kopf.on.event(GROUP, VERSION, "taskruns")
async def taskrun_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        await memo.reconciler.run_deleted(dict(body))
    else:
        await memo.reconciler.run_changed(dict(body))


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN: kopf.PRESENT})
async def pod_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.pod_changed(type or "ADDED", dict(body))


@kopf.on.event(GROUP, VERSION, "taskschedules")
async def schedule_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.scheduler.forget(dict(body))
    else:
        await memo.scheduler.changed(dict(body))
