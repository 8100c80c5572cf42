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

from durapod import auth
from durapod.runner.api import RunApi
from durapod.runner.context import Context, encode
from durapod.runner.errors import InvalidPayloadError, NonRetryableError, RetryAfter, Suspend
from durapod.runner.task import Task

EXIT_OK, EXIT_TASK_ERROR, EXIT_LOAD_ERROR, EXIT_SIGTERM = 0, 1, 2, 143


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


def run(env: dict[str, str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
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
    try:
        fn = load(env["DURAPOD_ENTRYPOINT"])
    except Exception as exc:
        api.report({"error": {**describe(exc, "EntrypointError"), "retryable": False}})
        return EXIT_LOAD_ERROR
    try:
        output = json.loads(encode(invoke(fn, info["payload"], ctx), "the task's output"))
    except Suspend as suspend:
        api.report({"suspend": suspend.report()})
        return EXIT_OK
    except Exception as exc:
        api.report({"error": describe(exc)})
        return EXIT_TASK_ERROR
    api.report({"output": output})
    return EXIT_OK


def main() -> None:
    sys.exit(run(dict(os.environ)))
