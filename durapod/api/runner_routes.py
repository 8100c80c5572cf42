"""The endpoints a task pod's runner calls, each with its per-run token.

Kept lean (orjson, one statement per checkpoint, no read before a write): they sit on
the hot path of every step. Writes are idempotent, so the runner may retry any call; with
the database down they answer 503 with ``Retry-After``, which the runner honours.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from uuid import UUID

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import Response

from durapod import logs, store, traceparent, tracing
from durapod.api import metrics
from durapod.api.database import Database
from durapod.api.pod_tokens import Caller, PodTokens
from durapod.api.problems import Problem
from durapod.api.triggering import create_record
from durapod.resources.models import DEFAULT_CHECKPOINT_BYTES
from durapod.store import checkpoints, pods, runs

#: No checkpoint may exceed the largest limit a TaskDefinition can set.
HARD_CHECKPOINT_LIMIT = 16 * 1024 * 1024
_NO_CONTENT = Response(status_code=204)
log = logging.getLogger("durapod.api.runner")
Endpoint = Callable[[Request], Awaitable[Response]]


def _logged(endpoint: Endpoint) -> Endpoint:
    """Records logged while the endpoint runs carry the run id its URL names (and the
    trace id of the runner's span, when it traces)."""

    @functools.wraps(endpoint)
    async def bound(request: Request) -> Response:
        trace_id = logs.trace_id(request.headers.get("traceparent"))
        with logs.bind(run_id=request.path_params.get("run_id"), trace_id=trace_id):
            return await endpoint(request)

    return bound


async def _pool(request: Request) -> store.Pool:
    db: Database = request.app.state.db
    return await db.pool()


async def _authorised_run(request: Request) -> Caller:
    """The pod behind the bearer token, if it is a pod of the run the URL names."""
    raw_id = request.path_params["run_id"]
    try:
        run_id = UUID(raw_id)
    except ValueError as exc:
        raise Problem(404, "Not Found", f"no run {raw_id!r}") from exc
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise Problem(401, "Unauthorized", "a pod's durapod token is required")
    tokens: PodTokens = request.app.state.pod_tokens
    caller = await tokens.caller(header.removeprefix("Bearer "))
    if caller is None:
        raise Problem(401, "Unauthorized", "the token is not a live pod's durapod token")
    if caller.run_id != run_id:
        raise Problem(403, "Forbidden", f"this pod's token may not access run {run_id}")
    return caller


async def _json_body(request: Request, limit: int = HARD_CHECKPOINT_LIMIT + 4096) -> Any:
    raw = await request.body()
    if len(raw) > limit:
        raise Problem(413, "Content Too Large", f"body is {len(raw)} bytes, over {limit}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Bad Request", f"body is not JSON: {exc}") from exc


def _field(body: Any, name: str, kind: type) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Problem(400, "Bad Request", f"{name!r} must be a {kind.__name__}")
    return value


@contextlib.contextmanager
def _run_exists(run_id: UUID) -> Iterator[None]:
    """A write for a run whose record was purged (its TaskRun long deleted) is a 410, not a
    500 the runner would retry."""
    try:
        yield
    except psycopg.errors.ForeignKeyViolation as exc:
        raise Problem(410, "Gone", f"run {run_id} no longer exists") from exc


@contextlib.contextmanager
def _written(caller: Caller, size: int) -> Iterator[None]:
    """A checkpoint or state write: its latency and size are observed once it is done."""
    started = time.perf_counter()
    with _run_exists(caller.run_id):
        yield
    metrics.checkpoint_written(caller.namespace, caller.task, size, time.perf_counter() - started)


@_logged
async def context(request: Request) -> Response:
    """What a new pod starts from: payload, attempt, checkpoint limit, every checkpoint."""
    caller = await _authorised_run(request)
    run_id, namespace = caller.run_id, caller.namespace
    pool = await _pool(request)
    run = await runs.get(pool, run_id)
    if run is None or run.namespace != namespace:
        raise Problem(403, "Forbidden", f"this token may not access run {run_id}")
    # Proof the pod exists and runs, whatever happens to the operator meanwhile: a pod
    # deleted before any operator saw it is judged gone, never created again.
    await pods.in_cluster(pool, run_id, caller.pod, running=True)
    limit = (run.definition or {}).get("checkpointSizeLimit", DEFAULT_CHECKPOINT_BYTES)
    stored = await checkpoints.for_run(pool, run_id)
    body = {
        "id": str(run.id),
        "namespace": run.namespace,
        "name": run.name,
        "task": run.task,
        "payload": run.payload,
        "attempt": run.attempt,
        "checkpointLimit": limit,
        "checkpoints": [
            {"step": c["step"], "seq": c["seq"], "output": c["output"]} for c in stored
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json")


@_logged
async def record_checkpoint(request: Request) -> Response:
    """A completed step: ``{"step", "seq", "output"}``. Writing it again changes nothing."""
    caller = await _authorised_run(request)
    body = await _json_body(request)
    step, seq = _field(body, "step", str), _field(body, "seq", int)
    if not step or seq < 0 or "output" not in body:
        raise Problem(400, "Bad Request", "a checkpoint needs a step name, seq ≥ 0 and output")
    output = orjson.dumps(body["output"])
    if len(output) > HARD_CHECKPOINT_LIMIT:
        raise Problem(413, "Content Too Large", f"step {step!r} output is {len(output)} bytes")
    with _written(caller, len(output)):
        stored = await checkpoints.record(await _pool(request), caller.run_id, step, seq, output)
    if stored:  # a retried write (its answer lost) is the same step: counted once
        metrics.step_measured(caller.namespace, caller.task, body.get("duration"))
    return _NO_CONTENT


@_logged
async def save_state(request: Request) -> Response:
    """``ctx.checkpoint(state)``: ``{"seq", "state"}``; a stale write never wins."""
    caller = await _authorised_run(request)
    body = await _json_body(request)
    seq = _field(body, "seq", int)
    if "state" not in body:
        raise Problem(400, "Bad Request", "missing 'state'")
    state = orjson.dumps(body["state"])
    with _written(caller, len(state)):
        await checkpoints.save_state(await _pool(request), caller.run_id, seq, state)
    return _NO_CONTENT


@_logged
async def trigger_child(request: Request) -> Response:
    """Start a child run named by the runner (so a retried call finds the same child)."""
    caller = await _authorised_run(request)
    run_id, namespace = caller.run_id, caller.namespace
    body = await _json_body(request, limit=1024 * 1024)
    task, name = _field(body, "task", str), _field(body, "name", str)
    run = await runs.get(await _pool(request), run_id)  # the database before the cluster
    if run is None or run.namespace != namespace:
        raise Problem(403, "Forbidden", f"this token may not access run {run_id}")
    # The child joins the parent's trace: under the runner's span, else its attempt's.
    root = traceparent.parse(run.traceparent)
    attempt = traceparent.attempt(root, run.id, caller.pod) if root else None
    with tracing.root("child", namespace, task, parent=attempt) as child_root:
        child, now = await request.app.state.kube.create_child(
            namespace,
            name,
            task,
            body.get("payload") or {},
            {"name": run.name, "uid": str(run.id)},
            annotations=child_root.annotations,
        )
        child_root.keep(child, now)
    if (child["spec"].get("parent") or {}).get("uid") != str(run.id):
        raise Problem(409, "Conflict", f"a TaskRun {name!r} exists and is not this run's child")
    await create_record(request.app.state.db, child, now)
    metrics.triggered(namespace, task, "child", created=now)
    return Response(
        orjson.dumps({"name": child["metadata"]["name"]}), media_type="application/json"
    )


@_logged
async def outcome(request: Request) -> Response:
    """A pod's report: ``{"pod", "output"}``, ``{"pod", "error"}`` or ``{"pod", "suspend"}``."""
    caller = await _authorised_run(request)
    run_id = caller.run_id
    body = await _json_body(request)
    pod = _field(body, "pod", int)
    if pod != caller.pod:
        raise Problem(403, "Forbidden", f"this is pod {caller.pod}'s token, not pod {pod}'s")
    kinds = [k for k in ("output", "error", "suspend") if k in body]
    if len(kinds) != 1:
        raise Problem(400, "Bad Request", "report exactly one of output, error or suspend")
    kind = kinds[0]
    value = body[kind]
    if kind == "error" and not (isinstance(value, dict) and {"type", "message"} <= value.keys()):
        raise Problem(400, "Bad Request", "error must carry type and message")
    if kind == "suspend" and not (isinstance(value, dict) and value.keys() & {"until", "child"}):
        raise Problem(400, "Bad Request", "suspend must carry until or child")
    if not await pods.report(await _pool(request), run_id, pod, kind, value):
        raise Problem(409, "Conflict", f"pod {pod} of run {run_id} is unknown or has ended")
    error_type = value.get("type") if kind == "error" else None
    log.info("pod %d reported %s", pod, kind, extra={"pod": pod, "error_type": error_type})
    return _NO_CONTENT
