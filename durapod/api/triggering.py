"""Turning trigger requests into TaskRuns, with idempotency keys and payload checks.

The database is touched before anything is created (the key's claim, or a ``SELECT 1``
without a key): with PostgreSQL down a trigger is a 503 that creates nothing, and a client
retrying with its idempotency key after recovery gets exactly one run. Once the TaskRun
exists, its record is created before the 202, so GET and list find the run at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from datetime import datetime
from typing import Any
from uuid import UUID

import jsonschema

from durapod import store, traceparent, tracing
from durapod.api import metrics
from durapod.api.database import Database
from durapod.api.models import RunRef, TriggerRequest
from durapod.api.problems import Problem
from durapod.durations import parse_duration
from durapod.resources.models import DEFAULT_KEY_TTL, payload_too_large
from durapod.store import idempotency, runs
from durapod.timestamps import parse_time

_ALPHABET = string.ascii_lowercase + string.digits
Obj = dict[str, Any]
log = logging.getLogger("durapod.api")


def new_name(task: str) -> str:
    """A fresh TaskRun name, chosen here so an idempotency key can name it first."""
    return f"{task[:50]}-{''.join(secrets.choice(_ALPHABET) for _ in range(10))}"


def ref(run: Obj, duplicate: bool = False, record: runs.Run | None = None) -> RunRef:
    """How a trigger answers for a TaskRun (its phase from its record, when there is one)."""
    meta = run["metadata"]
    return RunRef(
        id=meta.get("uid"),
        name=meta["name"],
        namespace=meta["namespace"],
        task=run["spec"]["task"],
        phase=record.phase if record is not None else (run.get("status") or {}).get("phase"),
        duplicate=duplicate,
    )


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_time(value) if isinstance(value, str) and value else None


async def create_record(db: Database, run: Obj, created_now: bool) -> runs.Run | None:
    """Create the record of a TaskRun just made, so it is listed before the 202.

    The record's ``created_at`` is the TaskRun's creationTimestamp, except for a TaskRun
    this call has just created: that timestamp has whole seconds only (runs triggered
    within one second would list in random order), so the database's clock stamps it.

    Callers checked the database first. None if it went away since: the run still exists
    (its TaskRun does) and the operator creates the record when it sees the TaskRun, so
    the trigger still answers 202 (a 503 would make a client without a key trigger twice).
    """
    meta, spec = run["metadata"], run["spec"]
    try:
        record, _ = await runs.ensure(
            await db.pool(),
            run_id=UUID(meta["uid"]),
            namespace=meta["namespace"],
            name=meta["name"],
            task=spec["task"],
            payload=spec.get("payload") or {},
            tags=spec.get("tags") or [],
            created_at=None if created_now else _timestamp(meta.get("creationTimestamp")),
            traceparent=traceparent.annotated(meta),
        )
        return record
    except store.UNAVAILABLE as exc:
        log.warning(
            "run %s/%s created, its record is left to the operator: %s",
            meta["namespace"],
            meta["name"],
            exc,
        )
        return None


class Triggers:
    def __init__(self, db: Database, kube: Any) -> None:
        self.db = db
        self.kube = kube

    async def definition(self, namespace: str, task: str) -> Obj:
        found: Obj | None = await self.kube.get_taskdefinition(namespace, task)
        if found is None:
            raise Problem(
                404, "Not Found", f'TaskDefinition "{task}" not found in namespace "{namespace}"'
            )
        return found

    @staticmethod
    def check(definition: Obj, task: str, request: TriggerRequest) -> None:
        """Refuse what can never run: a payload too big or off the task's schema."""
        if (why := payload_too_large(request.payload)) is not None:
            raise Problem(413, "Content Too Large", why)
        schema = definition["spec"].get("payloadSchema")
        if schema:
            try:
                jsonschema.validate(request.payload, schema)
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"payload does not match the schema of task {task} at {where}: {exc.message}",
                ) from exc

    def _key_request(
        self, namespace: str, task: str, request: TriggerRequest, name: str
    ) -> idempotency.Request | None:
        if request.idempotency_key is None:
            return None
        ttl = parse_duration(request.idempotency_key_ttl or DEFAULT_KEY_TTL)
        return idempotency.Request(
            namespace, task, request.idempotency_key, name, ttl, request.spec(task)
        )

    async def create(
        self,
        namespace: str,
        name: str,
        spec: Obj,
        source: str,
        labels: dict[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Create the TaskRun (or find the one a retried call made): the run's trace starts
        here, under the caller's trace if the request carried one."""
        with tracing.root(source, namespace, spec["task"]) as root:
            run, now = await self.kube.create_taskrun(
                namespace, name, spec, labels=labels, annotations=root.annotations
            )
            root.keep(run, now)
        return run, now

    async def _materialise(
        self, namespace: str, name: str, spec: Obj, claim: idempotency.Claim | None, source: str
    ) -> RunRef:
        if claim is not None and not claim.ours:
            # The key's run: create it from the stored spec if its trigger died before.
            run = await self.kube.get_taskrun(namespace, claim.run_name)
            if run is None and claim.spec is not None:
                run, now = await self.create(namespace, claim.run_name, claim.spec, source)
                metrics.triggered(namespace, spec["task"], source, created=now)
                return ref(run, True, await create_record(self.db, run, now))
            if run is None:
                raise Problem(
                    409,
                    "Conflict",
                    f"the idempotency key belongs to run {claim.run_name}, which no longer exists",
                )
            return ref(run, duplicate=True)
        run, now = await self.create(namespace, name, spec, source)
        metrics.triggered(namespace, spec["task"], source, created=now)
        return ref(run, record=await create_record(self.db, run, now))

    async def trigger(
        self, namespace: str, task: str, request: TriggerRequest, source: str = "http"
    ) -> RunRef:
        """Trigger a run; ``source`` (http, webhook) labels the count of runs created."""
        self.check(await self.definition(namespace, task), task, request)
        name = new_name(task)
        key = self._key_request(namespace, task, request, name)
        # The database before the cluster: with it down, a 503 and no TaskRun.
        if key is not None:
            claim: idempotency.Claim | None = await idempotency.claim(await self.db.pool(), key)
        else:
            claim = None
            await self.db.ping()
        return await self._materialise(namespace, name, request.spec(task), claim, source)

    async def batch(self, namespace: str, items: list[tuple[str, TriggerRequest]]) -> list[RunRef]:
        """Check all, claim every key in one transaction, then create the runs."""
        definitions = {
            task: await self.definition(namespace, task)
            for task in sorted({task for task, _ in items})
        }
        for task, request in items:
            self.check(definitions[task], task, request)
        names = [new_name(task) for task, _ in items]
        keys = [
            self._key_request(namespace, task, request, name)
            for (task, request), name in zip(items, names, strict=True)
        ]
        wanted = [k for k in keys if k is not None]
        if wanted:  # the database before the cluster, as for one trigger
            claimed = iter(await idempotency.claim_many(await self.db.pool(), wanted))
        else:
            claimed = iter([])
            await self.db.ping()
        claims = [next(claimed) if k is not None else None for k in keys]
        limit = asyncio.Semaphore(20)

        async def one(i: int) -> RunRef:
            async with limit:
                task, request = items[i]
                spec = request.spec(task)
                return await self._materialise(namespace, names[i], spec, claims[i], "batch")

        return list(await asyncio.gather(*(one(i) for i in range(len(items)))))
