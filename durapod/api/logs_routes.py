"""``GET /v1/namespaces/{namespace}/runs/{name}/logs``: the log of every pod a run has had.

One pod per attempt or resume, in order, each with what the run's record knows of it
(attempt, outcome, why it ended) and the end of its log as the Kubernetes API serves it
(``pods/log``): its last ``tail`` lines, within a byte limit per pod and per answer. A pod
the cluster no longer has is listed with a note saying its log is gone, never silently
left out; a run that holds no pod right now (Waiting, Retrying, Queued) answers with its
earlier pods and its phase.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from lightkube.core.exceptions import ApiError

from durapod import logs
from durapod.api import runs_routes
from durapod.api.auth import Principal
from durapod.api.database import Database
from durapod.api.kube import Kube, LogUnavailable
from durapod.api.models import Body
from durapod.store import pods

router = APIRouter(prefix="/v1/namespaces/{namespace}", tags=["runs"])
#: The most lines of one pod's log an answer holds (its last ones: where a run ends).
MAX_TAIL_LINES = 10_000
#: The most bytes of one pod's log an answer holds, and of all its pods' logs together
#: (shared out evenly): a line can be any size, and a run can have had many pods.
MAX_POD_LOG_BYTES = 2 * 1024 * 1024
MAX_LOG_BYTES = 16 * 1024 * 1024


class PodLog(Body):
    """One pod of a run: the record of its attempt, and its log."""

    pod: str
    index: int
    attempt: int
    machine: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None = None
    reason: str | None = None
    message: str | None = None
    log: str | None = None
    note: str | None = None
    #: Earlier lines were left out: more than ``tail`` lines, or more than the byte limit.
    truncated: bool = False


class RunLogs(Body):
    name: str
    namespace: str
    phase: str
    message: str | None = None
    pods: list[PodLog]


def _why(record: pods.PodRecord) -> tuple[str | None, str | None]:
    """How the pod ended, as its runner reported it: (reason, message)."""
    if record.error:
        reason = record.error.get("reason") or record.error.get("type")
        return reason, f"{record.error.get('type')}: {record.error.get('message')}"
    if record.suspend:
        until, child = record.suspend.get("until"), record.suspend.get("child")
        return None, f"sleeping until {until}" if until else f"waiting for child run {child}"
    return None, None


async def _read(
    kube: Kube, namespace: str, record: pods.PodRecord, tail: int, max_bytes: int
) -> PodLog:
    reason, message = _why(record)
    entry = PodLog(
        pod=record.name,
        index=record.idx,
        attempt=record.attempt,
        machine=record.machine,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        outcome=record.outcome,
        reason=reason,
        message=message,
    )
    try:
        end = await kube.pod_log(namespace, record.name, tail, max_bytes)
    except LogUnavailable as exc:
        entry.note = f"no log yet: {exc}"
        return entry
    except ApiError as exc:
        entry.note = f"its log could not be read: {exc.status.message or exc}"
        return entry
    if end is not None:
        entry.log, entry.truncated = end.text, end.truncated
    elif record.in_cluster or record.started_at is not None or record.outcome is not None:
        entry.note = "the pod was deleted: its log went with it"
    else:
        entry.note = "the pod has not been created yet"
    return entry


@router.get("/runs/{name}/logs", response_model=RunLogs, responses=runs_routes.ERRORS)
async def run_logs(
    namespace: runs_routes.Namespace,
    name: runs_routes.Name,
    request: Request,
    _: Principal,
    attempt: Annotated[int | None, Query(ge=1, description="Only this attempt's pods.")] = None,
    tail: Annotated[
        int, Query(ge=1, le=MAX_TAIL_LINES, description="The last lines of each pod's log.")
    ] = MAX_TAIL_LINES,
) -> RunLogs:
    """The run's pods in order (one per attempt or resume), each with its log."""
    # The runs routes' one read path: a run GET does not find has no logs either.
    run = await runs_routes._record_or_404(request, namespace, name)
    with logs.bind(namespace=namespace, run=name, run_id=str(run.id), task=run.task):
        db: Database = request.app.state.db
        pool = await db.pool()
        records = [
            r for r in await pods.for_run(pool, run.id) if attempt is None or r.attempt == attempt
        ]
        kube: Kube = request.app.state.kube
        each = min(MAX_POD_LOG_BYTES, MAX_LOG_BYTES // max(len(records), 1))
        return RunLogs(
            name=run.name,
            namespace=run.namespace,
            phase=run.phase,
            message=run.message or None,
            pods=[await _read(kube, namespace, r, tail, each) for r in records],
        )
