"""The pod entrypoint: load the task, run it from its checkpoints, report the outcome.

Exit codes tell the operator what happened even when a report could not be sent:
0 the pod's part is done (succeeded, or suspended for a durable wait), 1 the task
raised, 2 the task could not be loaded, 143 SIGTERM (after the write in flight).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from durapod import auth, logs, traceparent
from durapod.runner import tracing
from durapod.runner.api import RunApi
from durapod.runner.context import Context, encode
from durapod.runner.errors import InvalidPayloadError, NonRetryableError, RetryAfter, Suspend
from durapod.runner.task import Task

EXIT_OK, EXIT_TASK_ERROR, EXIT_LOAD_ERROR, EXIT_SIGTERM = 0, 1, 2, 143
log = logging.getLogger("durapod.runner")


def load(entrypoint: str) -> Callable[..., Any]:
    module_name, _, attr = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{entrypoint} is not callable")
    return fn  # type: ignore[no-any-return]


def describe(exc: BaseException, reason: str = "TaskError") -> dict[str, Any]:
    """The error report: what it was, and whether a retry may help."""
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "reason": reason,
        "retryable": not isinstance(exc, NonRetryableError),
    }
    if isinstance(exc, RetryAfter):
        error["retryAfter"] = exc.delay.total_seconds()
    return error


def invoke(fn: Callable[..., Any], payload: Any, ctx: Context) -> Any:
    """Call the task (``fn(payload, ctx)`` or ``fn(payload)``, sync or async)."""
    if isinstance(fn, Task):
        try:
            payload = fn.parse_payload(payload)
        except Exception as exc:
            raise InvalidPayloadError(f"invalid payload for task {fn.id}: {exc}") from exc
        takes_context, fn = fn.takes_context, fn.fn
    else:
        takes_context = len(inspect.signature(fn).parameters) >= 2
    result = fn(payload, ctx) if takes_context else fn(payload)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    dump = getattr(result, "model_dump", None)
    return dump(mode="json") if dump is not None else result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _on_sigterm(ctx: Context) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if ctx.writing:
            ctx.exit_requested = True  # the write in flight finishes first
        else:
            raise SystemExit(EXIT_SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def _print_error(error: dict[str, Any]) -> None:
    """Log the error (a JSON line with the run's fields), then end the pod's log with its
    traceback as Python prints an uncaught exception: after anything the task printed, so
    ``kubectl logs`` ends with the exception line."""
    log.error("%s: %s", error["type"], error["message"], extra={"reason": error["reason"]})
    sys.stdout.flush()
    sys.stderr.write(error["traceback"])
    sys.stderr.flush()


def run(env: dict[str, str]) -> int:
    logs.setup("runner")
    tracing.setup(env)  # OpenTelemetry is imported only if OTEL_* and TRACEPARENT ask
    api = RunApi(
        env["DURAPOD_API_URL"],
        env["DURAPOD_RUN_ID"],
        Path(env.get("DURAPOD_TOKEN_FILE", auth.TOKEN_FILE)),
        int(env.get("DURAPOD_POD_INDEX", "1")),
    )
    info = api.context()
    ctx = Context(
        run_id=info["id"],
        name=info["name"],
        namespace=info["namespace"],
        attempt=int(info["attempt"]),
        journal=api,
        checkpoints=info["checkpoints"],
        checkpoint_limit=int(info["checkpointLimit"]),
    )
    _on_sigterm(ctx)
    fields = {
        "run_id": ctx.run_id,
        "run": ctx.name,
        "namespace": ctx.namespace,
        "task": info.get("task"),
        "attempt": ctx.attempt,
        "trace_id": logs.trace_id(env.get(traceparent.ENV)),
    }
    with logs.bind(**fields):
        return _execute(env, api, ctx, info)


def _execute(env: dict[str, str], api: RunApi, ctx: Context, info: dict[str, Any]) -> int:
    entrypoint, stored = env["DURAPOD_ENTRYPOINT"], len(info["checkpoints"])
    log.info("running %s from %d stored checkpoints", entrypoint, stored)
    try:
        fn = load(entrypoint)
    except Exception as exc:
        error = {**describe(exc, "EntrypointError"), "retryable": False}
        try:
            api.report({"error": error})
        finally:
            _print_error(error)
        return EXIT_LOAD_ERROR
    try:
        output = json.loads(encode(invoke(fn, info["payload"], ctx), "the task's output"))
    except Suspend as suspend:
        report = suspend.report()
        api.report({"suspend": report})
        log.info("waiting durably: this pod exits, a later one carries on", extra=report)
        return EXIT_OK
    except Exception as exc:
        error = describe(exc)
        try:
            api.report({"error": error})
        finally:
            _print_error(error)
        return EXIT_TASK_ERROR
    api.report({"output": output})
    return EXIT_OK


def main() -> None:
    try:
        sys.exit(run(dict(os.environ)))
    finally:
        tracing.flush()  # the last step's spans, before the pod is gone
