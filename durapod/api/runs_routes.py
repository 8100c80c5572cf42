"""The public API: trigger, batch trigger, get, list, cancel and replay runs."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response

from durapod.api import metrics
from durapod.api.auth import Principal
from durapod.api.database import Database
from durapod.api.models import (
    Attempt,
    BatchRequest,
    BatchResponse,
    CheckpointInfo,
    QueueList,
    QueueView,
    RunDetail,
    RunPage,
    RunRef,
    RunSummary,
    TriggerRequest,
)
from durapod.api.problems import Problem, documented
from durapod.api.triggering import Triggers, create_record, new_name, ref
from durapod.resources.models import DNS_LABEL, DNS_SUBDOMAIN, Phase
from durapod.store import checkpoints, pods, queues, runs

router = APIRouter(prefix="/v1/namespaces/{namespace}", tags=["runs"])
#: Path parameters are checked here, so a bad name is a 422, never a call to the cluster.
Namespace = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
Name = Annotated[str, Path(pattern=DNS_SUBDOMAIN, max_length=253)]
Task = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
ERRORS = documented(400, 401, 404, 413, 422, 503)


def _triggers(request: Request) -> Triggers:
    triggers: Triggers = request.app.state.triggers
    return triggers


def _location(response: Response, run: RunRef) -> None:
    response.headers["Location"] = f"/v1/namespaces/{run.namespace}/runs/{run.name}"


@router.post("/tasks/{task}/runs", status_code=202, response_model=RunRef, responses=ERRORS)
async def trigger(
    namespace: Namespace,
    task: Task,
    body: TriggerRequest,
    request: Request,
    response: Response,
    _: Principal,
) -> RunRef:
    """Trigger a run of ``task``; answers at once (202), before the run starts.

    With an ``idempotencyKey`` already used within its TTL, the answer is the first run
    (200, ``duplicate: true``).
    """
    run = await _triggers(request).trigger(namespace, task, body)
    if run.duplicate:
        response.status_code = 200
    _location(response, run)
    return run


@router.post("/runs/batch", status_code=202, response_model=BatchResponse, responses=ERRORS)
async def batch_trigger(
    namespace: Namespace, body: BatchRequest, request: Request, _: Principal
) -> BatchResponse:
    """Trigger up to 500 runs; their idempotency keys are claimed in one transaction."""
    items = [
        (item.task, TriggerRequest.model_validate(item.model_dump(exclude={"task"})))
        for item in body.runs
    ]
    return BatchResponse(runs=await _triggers(request).batch(namespace, items))


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _not_found(namespace: str, name: str) -> Problem:
    return Problem(404, "Not Found", f'run "{name}" not found in namespace "{namespace}"')


async def _record_or_404(request: Request, namespace: str, name: str) -> runs.Run:
    """The run's record: the one read path (GET and list agree, a deleted run is gone)."""
    run = await runs.by_name(await _db(request).pool(), namespace, name)
    if run is None:
        raise _not_found(namespace, name)
    return run


@router.get("/runs/{name}", response_model=RunDetail, responses=ERRORS)
async def get_run(
    namespace: Namespace,
    name: Name,
    request: Request,
    _: Principal,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="Long-poll: wait up to this many seconds for the run to finish.",
        ),
    ] = 0,
) -> RunDetail:
    """A run: status, output or error, its attempts (one per pod) and its checkpoints."""
    run = await _record_or_404(request, namespace, name)
    if wait > 0 and not Phase(run.phase).finished:
        # The TaskRun's status is written after the record's commit: once the watch sees
        # a final phase, the record has it. No database connection is held meanwhile.
        await request.app.state.kube.wait_finished(namespace, name, wait)
        run = await _record_or_404(request, namespace, name)
    pool = await _db(request).pool()
    return RunDetail(
        id=str(run.id),
        name=run.name,
        namespace=run.namespace,
        task=run.task,
        phase=run.phase,
        payload=run.payload,
        tags=run.tags,
        attempt=run.attempt,
        resumes=run.resumes,
        output=run.output,
        error=run.error,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duplicate_of=run.duplicate_of,
        attempts=[
            Attempt(
                pod=p.name,
                attempt=p.attempt,
                machine=p.machine,
                created_at=p.created_at,
                started_at=p.started_at,
                finished_at=p.finished_at,
                outcome=p.outcome,
                error=p.error,
            )
            for p in await pods.for_run(pool, run.id)
        ],
        checkpoints=[
            CheckpointInfo(step=c["step"], seq=c["seq"], created_at=c["created_at"])
            for c in await checkpoints.for_run(pool, run.id)
        ],
    )


def encode_cursor(run: runs.Run) -> str:
    return base64.urlsafe_b64encode(f"{run.created_at.isoformat()}|{run.id}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if not cursor:
        return None
    try:
        stamp, _, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp), UUID(run_id)
    except ValueError as exc:
        raise Problem(422, "Unprocessable Content", "invalid cursor") from exc


@router.get("/runs", response_model=RunPage, responses=ERRORS)
async def list_runs(
    namespace: Namespace,
    request: Request,
    _: Principal,
    task: str | None = None,
    phase: Phase | None = None,
    tag: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> RunPage:
    """Runs newest first, filtered by task, phase, tag and creation time; paged by cursor."""
    found = await runs.page(
        await _db(request).pool(),
        namespace,
        task=task,
        phase=phase.value if phase else None,
        tag=tag,
        since=since,
        until=until,
        after=decode_cursor(cursor),
        limit=limit + 1,
    )
    more = len(found) > limit
    found = found[:limit]
    return RunPage(
        runs=[
            RunSummary(
                id=str(r.id),
                name=r.name,
                namespace=r.namespace,
                task=r.task,
                phase=r.phase,
                attempt=r.attempt,
                tags=r.tags,
                created_at=r.created_at,
                finished_at=r.finished_at,
            )
            for r in found
        ],
        next_cursor=encode_cursor(found[-1]) if more and found else None,
    )


@router.post("/runs/{name}/cancel", status_code=202, response_model=RunRef, responses=ERRORS)
async def cancel_run(namespace: Namespace, name: Name, request: Request, _: Principal) -> RunRef:
    """Cancel a run: its pod is terminated gracefully and the run ends Cancelled."""
    # A run GET does not find is not cancelled either; the cancel itself goes to the TaskRun.
    await _record_or_404(request, namespace, name)
    run = await request.app.state.kube.cancel_taskrun(namespace, name)
    if run is None:
        raise _not_found(namespace, name)
    return ref(run)


@router.post("/runs/{name}/replay", status_code=202, response_model=RunRef, responses=ERRORS)
async def replay_run(
    namespace: Namespace, name: Name, request: Request, response: Response, _: Principal
) -> RunRef:
    """A new run of the same task with the same payload and tags, linked to the original."""
    # The record first: a run GET does not find is not replayed, and with the database
    # down the replay is a 503 that creates nothing. The spec comes from the TaskRun.
    await _record_or_404(request, namespace, name)
    original = await request.app.state.kube.get_taskrun(namespace, name)
    if original is None:
        raise _not_found(namespace, name)
    spec = {
        k: v
        for k, v in original["spec"].items()
        if k in ("task", "payload", "tags", "priority", "concurrencyKey", "ttl")
    }
    created, now = await _triggers(request).create(
        namespace, new_name(spec["task"]), spec, "replay", labels={"durapod.io/replay-of": name}
    )
    run = ref(created, record=await create_record(_db(request), created, now))
    metrics.triggered(namespace, spec["task"], "replay", created=now)
    _location(response, run)
    return run


@router.get("/queues", response_model=QueueList, responses=ERRORS, tags=["queues"])
async def list_queues(namespace: Namespace, request: Request, _: Principal) -> QueueList:
    """Each queue's limits, and how many runs hold a slot or wait for one."""
    return QueueList(
        queues=[
            QueueView(
                name=q.name,
                concurrency_limit=q.limit,
                concurrency_key_limit=q.key_limit,
                running=q.running,
                waiting=q.waiting,
            )
            for q in await queues.states(await _db(request).pool(), namespace)
        ]
    )
