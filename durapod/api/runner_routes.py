"""The endpoints a task pod's runner calls, each with its per-run token.

Kept lean (orjson, one query per call): they sit on the run's hot path.
"""

from __future__ import annotations

from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response

from durapod.api.problems import Problem
from durapod.auth import verify_run_token
from durapod.store import runs


def _authorised_run(request: Request) -> tuple[UUID, str]:
    """The run id of the URL and the namespace the caller's token was minted for."""
    raw_id = request.path_params["run_id"]
    try:
        run_id = UUID(raw_id)
    except ValueError as exc:
        raise Problem(404, "Not Found", f"no run {raw_id!r}") from exc
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ")
    secret: str = request.app.state.settings.run_token_secret
    if not header.startswith("Bearer ") or not verify_run_token(secret, str(run_id), token):
        raise Problem(403, "Forbidden", "this token may not access run " + str(run_id))
    return run_id, token.partition(".")[0]


async def context(request: Request) -> Response:
    """What a new attempt starts from: the payload and the attempt number."""
    run_id, namespace = _authorised_run(request)
    run = await runs.get(request.app.state.pool, run_id)
    if run is None:
        raise Problem(404, "Not Found", f"no run {run_id}")
    if run.namespace != namespace:
        raise Problem(403, "Forbidden", f"this token may not access run {run_id}")
    body = {
        "id": str(run.id),
        "namespace": run.namespace,
        "name": run.name,
        "task": run.task,
        "payload": run.payload,
        "attempt": run.attempt,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def outcome(request: Request) -> Response:
    """The runner's report: ``{"output": ...}`` or ``{"error": {type, message, traceback}}``."""
    run_id, _ = _authorised_run(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Bad Request", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not ({"output", "error"} & body.keys()):
        raise Problem(400, "Bad Request", 'body must be {"output": ...} or {"error": {...}}')
    error = body.get("error")
    if error is not None and not (isinstance(error, dict) and {"type", "message"} <= error.keys()):
        raise Problem(400, "Bad Request", "error must carry type and message")
    if not await runs.report(
        request.app.state.pool, run_id, output=body.get("output"), error=error
    ):
        raise Problem(409, "Conflict", f"run {run_id} is unknown or already finished")
    return Response(status_code=204)
